"""The one training loop, for every task and method.

lr(step) = peak * schedule(step) * method.lr_multiplier(step); each optimizer step takes
``grad_accum`` micro-batches (index = (step * accum + micro) * world + rank); the method acts after
every optimizer step. Checkpoints (by steps, by time, at the end, on SIGINT/SIGTERM) resume exactly;
a non-finite loss stops the run. ``train`` reads as its phases: lock the run directory, resolve the
resume, open the run, fit, finish.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn

from sst.build import BuiltRun, build_run, check_output_dir
from sst.atomic import atomic_write_text
from sst.checkpoint import (
    BEST,
    LAST,
    STATE_FILE,
    CheckpointError,
    check_same_run,
    clean_stale,
    find_checkpoint,
    load_checkpoint,
    load_config_file,
    load_sharded_checkpoint,
    load_weights,
    roll_back,
    save_checkpoint,
    save_sharded_checkpoint,
)
from sst.config import RunConfig, to_dict
from sst.errors import NonFiniteError
from sst.models.recompute import apply_activation_checkpointing
from sst.optim.schedules import lr_factor
from sst.shards import full, local
from sst.tasks import move_to
from sst.train import distributed
from sst.train.memory import peak_memory_source, saved_activations
from sst.train.interrupt import StopSignals, TrainingInterrupted
from sst.train.logging import MetricsLogger, warn
from sst.train.memory import count_parameters, memory_report, peak_memory_bytes, reset_peak
from sst.train.run_lock import hold_run_dir

RESULTS = "results.json"
CONFIG_HISTORY = "config_history.jsonl"  # one line per change on resume: step, key, old, new


class NonFiniteLossError(NonFiniteError):
    """Training diverged: the loss, the gradients or the method's tensors became NaN or infinite."""


@dataclass
class StepResult:
    """One optimizer step: summed loss x units over its micro-batches, units, lr, method events."""

    loss_sum: float
    units: float
    lr: float
    grad_norm: float  # before clipping
    events: dict
    seconds: float = 0.0  # time the step took


@dataclass
class LossWindow:
    """Training loss and throughput summed over the steps since the last log record."""

    loss: float = 0.0  # sum of loss x units
    units: float = 0.0
    seconds: float = 0.0

    def add(self, result: StepResult) -> None:
        self.loss += result.loss_sum
        self.units += result.units
        self.seconds += result.seconds

    def record(self, result: StepResult, world_size: int) -> dict:
        """The train record of the window ending with ``result``; empties the window."""
        record = {"loss": self.loss / max(self.units, 1), "lr": result.lr, "grad_norm": result.grad_norm,
                  "units_per_second": self.units * world_size / max(self.seconds, 1e-9), **result.events}
        self.loss = self.units = self.seconds = 0.0
        return record


@dataclass
class LoopState:
    """Counters the loop carries across a checkpoint."""

    step: int = 0
    units: float = 0.0  # tokens / nodes processed so far
    train_seconds: float = 0.0
    best_metric: float | None = None
    best_step: int = 0
    bad_evals: int = 0
    history: list = field(default_factory=list)  # (step, train_loss) pairs for reports
    val_history: list = field(default_factory=list)  # (step, validation selection metric) pairs
    window: LossWindow = field(default_factory=LossWindow)  # the train record being summed
    eval_pending: bool = False  # the evaluation of ``step`` is still to come (saved before it)
    log_records: int | None = None  # metrics records written before this state was saved

    def as_dict(self) -> dict:
        return {**self.__dict__, "window": asdict(self.window)}

    @classmethod
    def from_dict(cls, saved: dict) -> LoopState:
        """Also reads older checkpoints (no window, saved after the step's evaluation, log by step)."""
        return cls(**{**saved, "window": LossWindow(**saved.get("window", {}))})


@dataclass
class Run:
    """Everything a run holds while it trains; ``runner`` is the (DDP-wrapped, compiled) model."""

    config: RunConfig
    dir: Path
    resolved: dict  # the plain config written with every checkpoint
    dist: distributed.DistInfo
    built: BuiltRun
    optimizer: torch.optim.Optimizer
    logger: MetricsLogger
    wrapped: nn.Module
    runner: nn.Module
    warmup: int
    param_counts: tuple[int, int]  # (trainable, total) as the run starts
    state: LoopState = field(default_factory=LoopState)
    saved: tuple[int, bool] | None = None  # (step, eval_pending) of the newest checkpoint in last/
    saved_at: float = field(default_factory=time.monotonic)  # when it was written (or the run opened)
    saved_activation_bytes: int | None = None  # autograd's saved tensors in this process's first micro-step

    @property
    def model(self) -> nn.Module:
        return self.built.model


def _autocast(device: torch.device, dtype_name: str):
    if dtype_name == "bfloat16" or (dtype_name == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _improved(value: float, best: float | None, higher_is_better: bool) -> bool:
    if best is None:
        return True
    return value > best if higher_is_better else value < best


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# -- phase 1: resolve the resume ---------------------------------------------------------------


@dataclass
class Resume:
    """Where a run starts: its checkpoint (None: fresh), the results if it is already finished,
    and the recorded config changes (dotted key, saved value, new value) it resumes with."""

    checkpoint: Path | None = None
    finished: dict | None = None
    changes: list = field(default_factory=list)


def _saved_loop(checkpoint: Path) -> dict:
    """The loop state of ``checkpoint`` without reading its tensors (memory-mapped)."""
    try:
        return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)["loop"]
    except Exception as err:  # truncated pickles raise several different error types
        raise CheckpointError(f"{checkpoint / STATE_FILE}: cannot be read ({type(err).__name__}: {err})") from err


def _finished_results(config: RunConfig, checkpoint: Path) -> dict | None:
    """results.json if it was written after ``checkpoint`` ended the run (its last step, or an
    early stop); None when the run goes on (never finished, or resumed with more steps)."""
    try:
        results = json.loads((Path(config.out_dir) / RESULTS).read_text())
    except (OSError, ValueError):
        return None
    loop, tc = _saved_loop(checkpoint), config.train
    stopped = bool(tc.patience) and loop.get("bad_evals", 0) >= tc.patience
    ended = loop["step"] >= tc.steps or stopped
    return results if isinstance(results, dict) and results.get("steps") == loop["step"] and ended else None


def resolve_resume(config: RunConfig, resume: bool | str) -> Resume:
    """Where the run starts. ``resume``: False starts fresh (refusing to overwrite an existing
    checkpoint), True continues from ``out_dir``/last, "auto" does whichever applies. A finished
    run (results.json written after its final checkpoint) is returned as it is.
    """
    run_dir = Path(config.out_dir)
    existing = find_checkpoint(run_dir / LAST)
    if resume == "auto":
        resume = existing is not None
    if resume and existing is None:
        raise CheckpointError(f"--resume: no checkpoint in {run_dir / LAST}")
    if not resume and existing is not None:
        raise CheckpointError(
            f"{run_dir} already holds a checkpoint; pass --resume to continue it or choose another out_dir"
        )
    if not resume:
        return Resume()
    changes = check_same_run(load_config_file(existing), to_dict(config), existing)
    finished = _finished_results(config, existing)
    if finished is None:
        clean_stale(run_dir / LAST, existing)
    return Resume(existing, finished, changes)


# -- phase 2: open the run ---------------------------------------------------------------------


def open_run(
    config: RunConfig, dist: distributed.DistInfo, checkpoint: Path | None = None,
    built: BuiltRun | None = None,
) -> Run:
    """Build (or take) task, model and method, the optimizer and logger; load ``checkpoint`` if given.

    The run's config.yaml is (re)written with the current values (a resume may change some);
    ``built`` lets a benchmark bring its own model and task.
    """
    tc = config.train
    run_dir = Path(config.out_dir)
    resolved = to_dict(config)
    built = built or build_run(config, run_dir)
    if tc.activation_checkpointing:  # after the method's surgery, before DDP and compile
        apply_activation_checkpointing(built.model)
    built.model = built.model.to(dist.device)
    wrapped = distributed.wrap(built.model, dist)  # FSDP2 shards in place: the optimizer holds the shards
    optimizer = built.method.build_optimizer(built.model, tc.lr, tc.weight_decay, tc.betas, tc.adam_eps)
    logger = MetricsLogger(run_dir, enabled=dist.is_main, tensorboard=tc.tensorboard)
    state = LoopState()
    if checkpoint is not None and dist.sharded:
        saved = load_sharded_checkpoint(checkpoint, built.model, optimizer, map_location=dist.device)
    elif checkpoint is not None:
        saved = load_checkpoint(checkpoint, built.model, map_location=dist.device)
        optimizer.load_state_dict(saved["optimizer"])
    if checkpoint is not None:
        built.method.load_state_dict(saved["method"])
        state = LoopState.from_dict(saved["loop"])
        _set_rng_state(saved["rng"], dist.device)
        logger.resume(state.step, state.log_records)
    else:
        logger.start()
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ([] if checkpoint else [RESULTS, CONFIG_HISTORY]):  # an earlier attempt's, no checkpoint
            (run_dir / stale).unlink(missing_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    runner = torch.compile(wrapped) if tc.compile else wrapped
    warmup = tc.warmup_steps or int(round(tc.warmup_ratio * tc.steps))
    counts = count_parameters(built.model)
    run = Run(config, run_dir, resolved, dist, built, optimizer, logger, wrapped, runner, warmup, counts, state)
    if checkpoint is not None:
        run.saved = (state.step, state.eval_pending)
    return run


def record_changes(run: Run, changes: list[tuple[str, Any, Any]]) -> None:
    """Warn about each config change a resume brings and append it to config_history.jsonl."""
    lines = []
    for key, old, new in changes:
        warn(f"{key} changed on resume at step {run.state.step}: {old} -> {new} (recorded in {CONFIG_HISTORY})")
        lines.append(json.dumps({"step": run.state.step, "key": key, "old": old, "new": new}) + "\n")
    if lines and run.dist.is_main:
        history = run.dir / CONFIG_HISTORY
        atomic_write_text(history, (history.read_text() if history.is_file() else "") + "".join(lines))


# -- phase 3: fit ------------------------------------------------------------------------------


def train_step(run: Run, batch_for: Callable[[int], Any] | None = None) -> StepResult:
    """One optimizer step over ``grad_accum`` micro-batches, then the method's ``after_step``.

    ``batch_for(index)`` gives micro-batch ``index`` (default: the task's training stream).
    Raises ``NonFiniteLossError`` before the optimizer moves if the loss or the gradient norm is not
    finite, and after it if the method finds non-finite tensors before its structural work.
    """
    tc, dist, state, method, optimizer = run.config.train, run.dist, run.state, run.built.method, run.optimizer
    batch_for = batch_for or run.built.task.train_batch
    device = dist.device
    start = time.perf_counter()
    run.model.train()
    lr = tc.lr * lr_factor(state.step, tc.steps, run.warmup, tc.schedule, tc.min_lr_ratio)
    lr *= method.lr_multiplier(state.step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss_sum, units = torch.zeros((), device=device), 0.0
    for micro in range(tc.grad_accum):
        index = (state.step * tc.grad_accum + micro) * dist.world_size + dist.rank
        batch = move_to(batch_for(index), device)
        sync = micro == tc.grad_accum - 1 or not dist.enabled
        measure = run.saved_activation_bytes is None  # once per process: the hooks only add sizes
        with (contextlib.nullcontext() if sync else distributed.no_sync(run.wrapped)), _autocast(device, tc.dtype), \
                saved_activations(run.model, enabled=measure) as saved:
            loss, micro_units = run.built.task.loss(run.runner, batch)
        if measure:
            run.saved_activation_bytes = saved.bytes
        (loss / tc.grad_accum).backward()
        loss_sum += loss.detach().float() * micro_units
        units += micro_units
    if dist.enabled:  # the logged loss is the global batch's (each rank holds an equal share)
        torch.distributed.all_reduce(loss_sum)
        loss_sum /= dist.world_size
    params = [p for p in run.model.parameters() if p.grad is not None]
    grad_norm = nn.utils.get_total_norm([p.grad for p in params])
    # One device sync per optimizer step: the divergence check needs the loss and the norm.
    step_loss, norm = torch.stack([loss_sum, full(grad_norm).float().to(device)]).tolist()
    if not distributed.all_true(math.isfinite(step_loss) and math.isfinite(norm), dist):
        optimizer.zero_grad(set_to_none=True)
        what = (f"training loss became {step_loss / max(units, 1):.4g}" if not math.isfinite(step_loss)
                else f"gradient norm became {norm:.4g}")
        # A checkpoint of these very weights would give the same loss and gradients on resume, at any lr.
        unusable = run.saved is not None and run.saved[0] == state.step
        raise diverged(run, f"{what} at step {state.step + 1}", lr, drop_newest=unusable)
    if tc.grad_clip > 0:
        nn.utils.clip_grads_with_norm_(params, tc.grad_clip, grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state.step += 1
    try:
        events = method.after_step(run.model, optimizer, state.step)
    except NonFiniteError as err:  # the method found NaN/inf before its structural work
        raise diverged(run, f"training diverged at step {state.step}: {err}", lr) from err
    seconds = time.perf_counter() - start
    state.train_seconds += seconds
    state.units += units
    return StepResult(step_loss, units, lr, norm, events, seconds)


def diverged(run: Run, what: str, lr: float, drop_newest: bool = False) -> NonFiniteLossError:
    """The error that stops a diverging run, naming the checkpoint (and its step) that survives it.

    ``drop_newest``: the newest checkpoint holds the weights that diverged; rank 0 removes it and
    falls back to the one before it.
    """
    kept, step, note = find_checkpoint(run.dir / LAST), run.saved[0] if run.saved else None, ""
    if drop_newest and run.dist.is_main and kept is not None:
        note = f"the checkpoint of step {step} gives the same on resume and was removed; "
        kept = roll_back(run.dir / LAST)
        step = _saved_loop(kept)["step"] if kept is not None else None
    return NonFiniteLossError(
        f"{what} (method {run.config.method.name}, lr {lr:.3g}); {note}"
        + (f"the last good checkpoint {kept}" + (f" (step {step})" if step is not None else "")
           + " is kept: resume it with --resume and a lower train.lr or a longer warm-up (train.warmup_steps)"
           if kept else "no usable checkpoint remains. Start again with a lower train.lr or a longer "
           "warm-up (train.warmup_steps)")
        + "."
    )


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    floats = [local(t.detach()) for t in tensors if t.is_floating_point()]  # all_true joins the ranks
    return not floats or bool(torch.stack([t.isfinite().all() for t in floats]).all())


def save_last(run: Run) -> None:
    """The full training state to ``last/`` (rank 0 writes, every rank waits).

    Only a finite state is a good checkpoint: a non-finite one raises instead of replacing it.
    """
    opt_tensors = [v for st in run.optimizer.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    if not distributed.all_true(_all_finite([*run.model.parameters(), *run.model.buffers(), *opt_tensors]),
                                run.dist):
        raise diverged(run, f"parameters or optimizer state are not finite at step {run.state.step}",
                       run.optimizer.param_groups[0]["lr"])
    run.state.log_records = run.logger.records
    state = {"method": run.built.method.state_dict(), "loop": run.state.as_dict(), "rng": _rng_state(run.dist.device)}
    write_checkpoint(run, LAST, state, run.optimizer)
    distributed.barrier(run.dist)
    run.saved, run.saved_at = (run.state.step, run.state.eval_pending), time.monotonic()


def write_checkpoint(run: Run, name: str, state: dict, optimizer: torch.optim.Optimizer | None = None) -> None:
    """``state`` (+ the weights, + ``optimizer``'s state) to ``run.dir/name``: rank 0 writes a
    whole checkpoint, or, sharded (FSDP2), every rank writes its shards."""
    if run.dist.sharded:
        save_sharded_checkpoint(run.dir / name, run.model, optimizer, state, run.resolved)
    elif run.dist.is_main:
        extra = {"optimizer": optimizer.state_dict()} if optimizer is not None else {}
        save_checkpoint(run.dir / name, run.model, {**extra, **state}, run.resolved)


def evaluate(run: Run) -> dict[str, float]:
    """Validation metrics; tracks the best (saving ``best/``) and the evaluations without progress."""
    tc, state, task = run.config.train, run.state, run.built.task
    metrics = task.evaluate(run.model, "val", tc.eval_batches)
    distributed.reshard(run.model)
    state.eval_pending = False
    metric = metrics[task.selection_metric]
    state.val_history.append((state.step, float(metric)))
    if _improved(metric, state.best_metric, task.higher_is_better):
        state.best_metric, state.best_step, state.bad_evals = metric, state.step, 0
        if tc.keep_best:
            write_checkpoint(run, BEST, {"loop": state.as_dict()})
    else:
        state.bad_evals += 1
    run.logger.log(state.step, "eval", metrics)
    return metrics


def _stopped_early(run: Run) -> bool:
    return bool(run.config.train.patience) and run.state.bad_evals >= run.config.train.patience


def _save_due(run: Run) -> bool:
    """A checkpoint is due: by steps, at the last step, or by time (every rank agrees)."""
    tc, step = run.config.train, run.state.step
    timed = tc.save_every_minutes > 0 and not distributed.all_true(
        time.monotonic() - run.saved_at < tc.save_every_minutes * 60, run.dist)
    return bool(tc.save_every and step % tc.save_every == 0) or step == tc.steps or timed


def _save_if_changed(run: Run) -> None:
    if run.saved != (run.state.step, run.state.eval_pending):
        save_last(run)


def _log_step(run: Run, result: StepResult, progress) -> None:
    """Add the step to the loss window; every ``log_every`` steps (and at the end) log the window."""
    tc, state = run.config.train, run.state
    state.window.add(result)
    if state.step % tc.log_every == 0 or state.step == tc.steps:
        record = state.window.record(result, run.dist.world_size)
        run.logger.log(state.step, "train", record)
        state.history.append((state.step, record["loss"]))
        if progress is not None:
            progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{result.lr:.2e}",
                                 tok_s=f"{record['units_per_second']:.0f}")
    if progress is not None:
        progress.update(1)


def fit(run: Run, stop: StopSignals | None = None) -> None:
    """Step until ``train.steps`` (or early stopping), logging, evaluating and saving on schedule.

    A step's checkpoint is written before its evaluation (which a resumed run then repeats), so
    a failing evaluation loses no training. A signal in ``stop`` ends the run after the current
    step with a checkpoint and ``TrainingInterrupted``.
    """
    tc, state = run.config.train, run.state
    progress = None
    if tc.progress and run.dist.is_main:
        from tqdm.auto import tqdm

        progress = tqdm(total=tc.steps, initial=state.step, desc=run.config.method.name, dynamic_ncols=True)
    held = memory_report(run.model, run.optimizer)  # what the run holds before its first step
    reset_peak(run.dist.device, held["param_bytes"] + held["optimizer_state_bytes"])
    try:
        while True:
            if state.eval_pending:  # this step's, or that of the checkpoint the run resumed from
                evaluate(run)
            if _stopped_early(run):
                _save_if_changed(run)  # the checkpoint records the stop
                break
            if stop is not None and not distributed.all_true(stop.signum is None, run.dist):
                _save_if_changed(run)
                raise TrainingInterrupted(state.step, run.dir / LAST, stop.signum or signal.SIGTERM)
            if state.step >= tc.steps:
                break
            _log_step(run, train_step(run), progress)
            state.eval_pending = bool(tc.eval_every and state.step % tc.eval_every == 0) or state.step == tc.steps
            if _save_due(run):
                save_last(run)
    finally:
        if progress is not None:
            progress.close()


# -- phase 4: finish ---------------------------------------------------------------------------


def finish(run: Run) -> dict[str, Any]:
    """Final evaluation on the best checkpoint, results.json; returns the results."""
    tc, state, task, method = run.config.train, run.state, run.built.task, run.built.method
    peak = peak_memory_bytes(run.dist.device)
    trainable, total = run.param_counts
    if tc.keep_best and (run.dir / BEST).is_dir():
        distributed.barrier(run.dist)
        if run.dist.sharded:
            load_sharded_checkpoint(run.dir / BEST, run.model)
        else:
            load_weights(run.dir / BEST, run.model)
    final = task.evaluate(run.model, "val", 0)
    final.update(task.final_metrics(run.model))
    distributed.reshard(run.model)
    results = {
        "method": run.config.method.name,
        "rank": None,
        "steps": state.step,
        "best_step": state.best_step,
        "metric": task.report_metric or task.selection_metric,
        "selection_metric": task.selection_metric,
        "higher_is_better": task.higher_is_better,
        "epochs": task.epochs_seen(state.units, state.step),
        **final,
        "trainable_params": trainable,
        "total_params": total,
        **memory_report(run.model, run.optimizer),
        "peak_memory_bytes": peak,
        "peak_memory_source": peak_memory_source(run.dist.device),
        "saved_activation_bytes": run.saved_activation_bytes,
        "tokens_per_second": state.units * run.dist.world_size / max(state.train_seconds, 1e-9),
        "svd_seconds": 0.0,
        "train_seconds": state.train_seconds,
        "loss_history": state.history,
        "val_history": state.val_history,
        "task": task.describe(),
        "device": str(run.dist.device),
        "world_size": run.dist.world_size,
    }
    results.update(method.report())
    if run.dist.is_main:
        run.logger.log(state.step, "final", dict(final))
        atomic_write_text(run.dir / RESULTS, json.dumps(results, indent=2))
    run.logger.close()
    return results


def train(config: RunConfig, resume: bool | str = False) -> dict[str, Any]:
    """Train one run; returns (and writes to ``out_dir``/results.json) its metrics.

    ``resume``: False starts fresh (refusing to overwrite an existing checkpoint), True continues
    from ``out_dir``/last, "auto" does whichever applies. A finished run is returned as it is.
    The run directory is locked meanwhile; SIGINT/SIGTERM while fitting save a checkpoint and
    raise ``TrainingInterrupted``.
    """
    dist = distributed.setup(config.train.device, config.train.parallelism)
    check_output_dir(Path(config.out_dir))  # before the lock creates the folder
    with hold_run_dir(config.out_dir, dist):
        start = resolve_resume(config, resume)
        if start.finished is not None:
            if resume is True:  # "auto" means: whichever applies
                warn(f"{config.out_dir} is finished (step {start.finished['steps']}, {RESULTS}); nothing changed")
            return start.finished
        run = open_run(config, dist, start.checkpoint)
        record_changes(run, start.changes)
        with StopSignals() as stop:
            fit(run, stop)
        return finish(run)
