"""The one training loop, for every task and method.

lr(step) = peak * schedule(step) * method.lr_multiplier(step); each optimizer step takes
``grad_accum`` micro-batches (index = (step * accum + micro) * world + rank); the method acts after
every optimizer step. Checkpoints at save points resume exactly; a non-finite loss stops the run.
``train`` reads as its phases: resolve the resume, open the run, fit, finish.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn

from sst.build import BuiltRun, build_run
from sst.checkpoint import (
    BEST,
    LAST,
    CheckpointError,
    check_same_run,
    clean_stale,
    find_checkpoint,
    load_checkpoint,
    load_config_file,
    load_weights,
    save_checkpoint,
)
from sst.config import RunConfig, to_dict
from sst.errors import NonFiniteError
from sst.optim.schedules import lr_factor
from sst.tasks import move_to
from sst.train import distributed
from sst.train.logging import MetricsLogger
from sst.train.memory import count_parameters, memory_report, peak_memory_bytes, reset_peak

RESULTS = "results.json"


class NonFiniteLossError(NonFiniteError):
    """Training diverged: the loss, the gradients or the method's tensors became NaN or infinite."""


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

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StepResult:
    """One optimizer step: summed loss x units over its micro-batches, units, lr, method events."""

    loss_sum: float
    units: float
    lr: float
    grad_norm: float  # before clipping
    events: dict


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


def resolve_resume(config: RunConfig, resume: bool | str) -> tuple[Path | None, dict | None]:
    """(checkpoint to resume from or None, results of an already finished run or None).

    ``resume``: False starts fresh (refusing to overwrite an existing checkpoint), True continues
    from ``out_dir``/last, "auto" does whichever applies (and returns finished results as they are).
    """
    run_dir = Path(config.out_dir)
    resolved = to_dict(config)
    existing = find_checkpoint(run_dir / LAST)
    if resume == "auto":
        done = run_dir / RESULTS
        if done.is_file() and existing is not None:
            check_same_run(load_config_file(existing), resolved, existing)
            return existing, json.loads(done.read_text())
        resume = existing is not None
    if resume and existing is None:
        raise CheckpointError(f"--resume: no checkpoint in {run_dir / LAST}")
    if not resume and existing is not None:
        raise CheckpointError(
            f"{run_dir} already holds a checkpoint; pass --resume to continue it or choose another out_dir"
        )
    if resume:
        check_same_run(load_config_file(existing), resolved, existing)
        clean_stale(run_dir / LAST, existing)
    return (existing if resume else None), None


# -- phase 2: open the run ---------------------------------------------------------------------


def open_run(
    config: RunConfig, dist: distributed.DistInfo, checkpoint: Path | None = None,
    built: BuiltRun | None = None,
) -> Run:
    """Build (or take) task, model and method, the optimizer and logger; load ``checkpoint`` if given.

    A fresh run writes its config.yaml; ``built`` lets a benchmark bring its own model and task.
    """
    tc = config.train
    run_dir = Path(config.out_dir)
    resolved = to_dict(config)
    built = built or build_run(config, run_dir)
    built.model = built.model.to(dist.device)
    optimizer = built.method.build_optimizer(built.model, tc.lr, tc.weight_decay, tc.betas, tc.adam_eps)
    logger = MetricsLogger(run_dir, enabled=dist.is_main, tensorboard=tc.tensorboard)
    state = LoopState()
    if checkpoint is not None:
        saved = load_checkpoint(checkpoint, built.model, map_location=dist.device)
        optimizer.load_state_dict(saved["optimizer"])
        built.method.load_state_dict(saved["method"])
        state = LoopState(**saved["loop"])
        _set_rng_state(saved["rng"], dist.device)
        logger.truncate_after(state.step)
    elif dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    wrapped = distributed.wrap(built.model, dist)
    runner = torch.compile(wrapped) if tc.compile else wrapped
    warmup = tc.warmup_steps or int(round(tc.warmup_ratio * tc.steps))
    counts = count_parameters(built.model)
    return Run(config, run_dir, resolved, dist, built, optimizer, logger, wrapped, runner, warmup, counts, state)


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
        with (contextlib.nullcontext() if sync else run.wrapped.no_sync()), _autocast(device, tc.dtype):
            loss, micro_units = run.built.task.loss(run.runner, batch)
        (loss / tc.grad_accum).backward()
        loss_sum += loss.detach().float() * micro_units
        units += micro_units
    params = [p for p in run.model.parameters() if p.grad is not None]
    grad_norm = nn.utils.get_total_norm([p.grad for p in params])
    # One device sync per optimizer step: the divergence check needs the loss and the norm.
    step_loss, norm = torch.stack([loss_sum, grad_norm.float().to(device)]).tolist()
    if not distributed.all_true(math.isfinite(step_loss) and math.isfinite(norm), dist):
        optimizer.zero_grad(set_to_none=True)
        what = (f"training loss became {step_loss / max(units, 1):.4g}" if not math.isfinite(step_loss)
                else f"gradient norm became {norm:.4g}")
        raise diverged(run, f"{what} at step {state.step + 1}", lr)
    if tc.grad_clip > 0:
        nn.utils.clip_grads_with_norm_(params, tc.grad_clip, grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state.step += 1
    try:
        events = method.after_step(run.model, optimizer, state.step)
    except NonFiniteError as err:  # the method found NaN/inf before its structural work
        raise diverged(run, f"training diverged at step {state.step}: {err}", lr) from err
    state.train_seconds += time.perf_counter() - start
    state.units += units
    return StepResult(step_loss, units, lr, norm, events)


def diverged(run: Run, what: str, lr: float) -> NonFiniteLossError:
    """The error that stops a diverging run, naming the checkpoint that survives it."""
    kept = find_checkpoint(run.dir / LAST)
    return NonFiniteLossError(
        f"{what} (method {run.config.method.name}, lr {lr:.3g}); "
        + (f"the last good checkpoint {kept} is kept" if kept else "no checkpoint was written")
        + ". Lower train.lr or raise train.warmup_steps."
    )


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    floats = [t.detach() for t in tensors if t.is_floating_point()]
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
    if run.dist.is_main:
        state = {"optimizer": run.optimizer.state_dict(), "method": run.built.method.state_dict(),
                 "loop": run.state.as_dict(), "rng": _rng_state(run.dist.device)}
        save_checkpoint(run.dir / LAST, run.model, state, run.resolved)
    distributed.barrier(run.dist)


def evaluate(run: Run) -> dict[str, float]:
    """Validation metrics; tracks the best (saving ``best/``) and the evaluations without progress."""
    tc, state, task = run.config.train, run.state, run.built.task
    metrics = task.evaluate(run.model, "val", tc.eval_batches)
    metric = metrics[task.selection_metric]
    if _improved(metric, state.best_metric, task.higher_is_better):
        state.best_metric, state.best_step, state.bad_evals = metric, state.step, 0
        if tc.keep_best and run.dist.is_main:
            save_checkpoint(run.dir / BEST, run.model, {"loop": state.as_dict()}, run.resolved)
    else:
        state.bad_evals += 1
    run.logger.log(state.step, "eval", metrics)
    return metrics


class _LossWindow:
    """Training loss and throughput averaged over the steps since the last log record."""

    def __init__(self):
        self.loss, self.units, self.start = 0.0, 0.0, time.perf_counter()

    def add(self, result: StepResult) -> None:
        self.loss += result.loss_sum
        self.units += result.units

    def record(self, result: StepResult, world_size: int) -> dict:
        elapsed = time.perf_counter() - self.start
        record = {"loss": self.loss / max(self.units, 1), "lr": result.lr, "grad_norm": result.grad_norm,
                  "units_per_second": self.units * world_size / max(elapsed, 1e-9), **result.events}
        self.__init__()
        return record


def fit(run: Run) -> None:
    """Step until ``train.steps`` (or early stopping), logging, evaluating and saving on schedule."""
    tc, state = run.config.train, run.state
    progress = None
    if tc.progress and run.dist.is_main:
        from tqdm.auto import tqdm

        progress = tqdm(total=tc.steps, initial=state.step, desc=run.config.method.name, dynamic_ncols=True)
    reset_peak(run.dist.device)
    window = _LossWindow()
    while state.step < tc.steps:
        result = train_step(run)
        window.add(result)
        if state.step % tc.log_every == 0 or state.step == tc.steps:
            record = window.record(result, run.dist.world_size)
            run.logger.log(state.step, "train", record)
            state.history.append((state.step, record["loss"]))
            if progress is not None:
                progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{result.lr:.2e}",
                                     tok_s=f"{record['units_per_second']:.0f}")
        if progress is not None:
            progress.update(1)
        stop = False
        if (tc.eval_every and state.step % tc.eval_every == 0) or state.step == tc.steps:
            evaluate(run)
            stop = bool(tc.patience) and state.bad_evals >= tc.patience
        if (tc.save_every and state.step % tc.save_every == 0) or state.step == tc.steps or stop:
            save_last(run)
        if stop:
            break
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
        load_weights(run.dir / BEST, run.model)
    final = task.evaluate(run.model, "val", 0)
    final.update(task.final_metrics(run.model))
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
        "tokens_per_second": state.units * run.dist.world_size / max(state.train_seconds, 1e-9),
        "svd_seconds": 0.0,
        "train_seconds": state.train_seconds,
        "loss_history": state.history,
        "task": task.describe(),
        "device": str(run.dist.device),
        "world_size": run.dist.world_size,
    }
    results.update(method.report())
    if run.dist.is_main:
        run.logger.log(state.step, "final", dict(final))
        (run.dir / RESULTS).write_text(json.dumps(results, indent=2))
    run.logger.close()
    return results


def train(config: RunConfig, resume: bool | str = False) -> dict[str, Any]:
    """Train one run; returns (and writes to ``out_dir``/results.json) its metrics.

    ``resume``: False starts fresh (refusing to overwrite an existing checkpoint), True continues
    from ``out_dir``/last, "auto" does whichever applies (and returns finished results as they are).
    """
    dist = distributed.setup(config.train.device)
    checkpoint, finished = resolve_resume(config, resume)
    if finished is not None:
        return finished
    run = open_run(config, dist, checkpoint)
    fit(run)
    return finish(run)
