"""The one training loop, for every task and method.

lr(step) = peak * schedule(step) * method.lr_multiplier(step); each optimizer step takes
``grad_accum`` micro-batches (index = (step * accum + micro) * world + rank); the method acts after
every optimizer step. Checkpoints at save points resume exactly; a non-finite loss stops the run.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from sst.config import RunConfig, to_dict
from sst.methods import build_method
from sst.optim.schedules import lr_factor
from sst.tasks import build_task, move_to
from sst.train import distributed
from sst.train.checkpoint import (
    CheckpointError,
    check_same_run,
    find_checkpoint,
    load_checkpoint,
    load_config_file,
    load_weights,
    save_checkpoint,
)
from sst.train.logging import MetricsLogger
from sst.train.memory import count_parameters, memory_report, peak_memory_bytes, reset_peak

LAST, BEST, RESULTS = "last", "best", "results.json"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


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


def train(config: RunConfig, resume: bool | str = False) -> dict[str, Any]:
    """Train one run; returns (and writes to ``out_dir``/results.json) its metrics.

    ``resume``: False starts fresh (refusing to overwrite an existing checkpoint), True continues
    from ``out_dir``/last, "auto" does whichever applies (and returns finished results as they are).
    """
    tc = config.train
    run_dir = Path(config.out_dir)
    resolved = to_dict(config)
    info = distributed.setup(tc.device)
    device = info.device
    existing = find_checkpoint(run_dir / LAST)
    if resume == "auto":
        done = run_dir / RESULTS
        if done.is_file() and existing is not None:
            check_same_run(load_config_file(existing), resolved, existing)
            return json.loads(done.read_text())
        resume = existing is not None
    if resume and existing is None:
        raise CheckpointError(f"--resume: no checkpoint in {run_dir / LAST}")
    if not resume and existing is not None:
        raise CheckpointError(
            f"{run_dir} already holds a checkpoint; pass --resume to continue it or choose another out_dir"
        )
    if resume:
        check_same_run(load_config_file(existing), resolved, existing)

    torch.manual_seed(config.seed)
    task = build_task(config.task, config.seed, run_dir)
    model = task.build_model()
    method = build_method(config.method, config.seed)
    model = method.prepare_model(model).to(device)
    optimizer = method.build_optimizer(model, tc.lr, tc.weight_decay, tc.betas, tc.adam_eps)
    state = LoopState()
    logger = MetricsLogger(run_dir, enabled=info.is_main, tensorboard=tc.tensorboard)
    if resume:
        saved = load_checkpoint(existing, model, map_location=device)
        optimizer.load_state_dict(saved["optimizer"])
        method.load_state_dict(saved["method"])
        state = LoopState(**saved["loop"])
        _set_rng_state(saved["rng"], device)
        logger.truncate_after(state.step)
    elif info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))

    wrapped = distributed.wrap(model, info)
    runner = torch.compile(wrapped) if tc.compile else wrapped
    warmup = tc.warmup_steps or int(round(tc.warmup_ratio * tc.steps))
    trainable, total = count_parameters(model)

    def checkpoint(path: Path) -> None:
        if info.is_main:
            save_checkpoint(
                path, model,
                {"optimizer": optimizer.state_dict(), "method": method.state_dict(),
                 "loop": state.as_dict(), "rng": _rng_state(device)},
                resolved,
            )
        distributed.barrier(info)

    def evaluate() -> dict[str, float]:
        metrics = task.evaluate(model, "val", tc.eval_batches)
        metric = metrics[task.selection_metric]
        if _improved(metric, state.best_metric, task.higher_is_better):
            state.best_metric, state.best_step, state.bad_evals = metric, state.step, 0
            if tc.keep_best and info.is_main:
                save_checkpoint(run_dir / BEST, model, {"loop": state.as_dict()}, resolved)
        else:
            state.bad_evals += 1
        logger.log(state.step, "eval", metrics)
        return metrics

    progress = None
    if tc.progress and info.is_main:
        from tqdm.auto import tqdm

        progress = tqdm(total=tc.steps, initial=state.step, desc=config.method.name, dynamic_ncols=True)
    reset_peak(device)
    window_loss, window_units, window_start = 0.0, 0.0, time.perf_counter()
    while state.step < tc.steps:
        model.train()
        step_start = time.perf_counter()
        lr = tc.lr * lr_factor(state.step, tc.steps, warmup, tc.schedule, tc.min_lr_ratio)
        lr *= method.lr_multiplier(state.step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum, step_units = torch.zeros((), device=device), 0.0
        for micro in range(tc.grad_accum):
            index = (state.step * tc.grad_accum + micro) * info.world_size + info.rank
            batch = move_to(task.train_batch(index), device)
            sync = micro == tc.grad_accum - 1 or not info.enabled
            with (contextlib.nullcontext() if sync else wrapped.no_sync()), _autocast(device, tc.dtype):
                loss, units = task.loss(runner, batch)
            (loss / tc.grad_accum).backward()
            loss_sum += loss.detach().float() * units
            step_units += units
        step_loss = float(loss_sum)  # one device sync per optimizer step (the NaN check needs it)
        if not distributed.all_true(math.isfinite(step_loss), info):
            optimizer.zero_grad(set_to_none=True)
            kept = find_checkpoint(run_dir / LAST)
            raise NonFiniteLossError(
                f"training loss became {step_loss / max(step_units, 1):.4g} at step {state.step + 1} "
                f"(method {config.method.name}, lr {lr:.3g}); "
                + (f"the last good checkpoint {kept} is kept" if kept else "no checkpoint was written")
                + ". Lower train.lr or raise train.warmup_steps."
            )
        if tc.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        events = method.after_step(model, optimizer, state.step)
        state.train_seconds += time.perf_counter() - step_start
        state.units += step_units
        window_loss += step_loss
        window_units += step_units
        if state.step % tc.log_every == 0 or state.step == tc.steps:
            elapsed = time.perf_counter() - window_start
            record = {"loss": window_loss / max(window_units, 1), "lr": lr,
                      "units_per_second": window_units * info.world_size / max(elapsed, 1e-9), **events}
            logger.log(state.step, "train", record)
            state.history.append((state.step, record["loss"]))
            if progress is not None:
                progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}",
                                     tok_s=f"{record['units_per_second']:.0f}")
            window_loss, window_units, window_start = 0.0, 0.0, time.perf_counter()
        if progress is not None:
            progress.update(1)
        stop = False
        if (tc.eval_every and state.step % tc.eval_every == 0) or state.step == tc.steps:
            evaluate()
            stop = bool(tc.patience) and state.bad_evals >= tc.patience
        if (tc.save_every and state.step % tc.save_every == 0) or state.step == tc.steps or stop:
            checkpoint(run_dir / LAST)
        if stop:
            break
    if progress is not None:
        progress.close()

    peak = peak_memory_bytes(device)
    if tc.keep_best and (run_dir / BEST).is_dir():
        distributed.barrier(info)
        load_weights(run_dir / BEST, model)
    final = task.evaluate(model, "val", 0)
    final.update(task.final_metrics(model))
    results = {
        "method": config.method.name,
        "rank": getattr(config.method, "rank", None),
        "steps": state.step,
        "best_step": state.best_step,
        "metric": task.report_metric or task.selection_metric,
        "higher_is_better": task.higher_is_better,
        **final,
        "trainable_params": trainable,
        "total_params": total,
        **memory_report(model, optimizer),
        "peak_memory_bytes": peak,
        "tokens_per_second": state.units * info.world_size / max(state.train_seconds, 1e-9),
        "svd_seconds": method.svd_seconds,
        "train_seconds": state.train_seconds,
        "loss_history": state.history,
        "task": task.describe(),
        "device": str(device),
        "world_size": info.world_size,
    }
    if info.is_main:
        logger.log(state.step, "final", {k: v for k, v in final.items()})
        (run_dir / RESULTS).write_text(json.dumps(results, indent=2))
    logger.close()
    return results
