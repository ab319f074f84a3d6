"""Train a converted model with ``transformers.Trainer``: ``SSTTrainer`` (a subclass, since only a
Trainer can choose the optimizer, wrap the schedule and see the checkpoint it resumes from).

Optimizer = ``method.build_optimizer``; lr(step) = peak * schedule(step) * method.lr_multiplier(step);
``after_step`` once per optimizer step; the method's state in every checkpoint (``sst_method.pt``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sst.errors import CheckpointError, ConfigError, require_package
from sst.methods import TrainingMethod, record_method

METHOD_STATE_FILE = "sst_method.pt"
HF_INSTALL = "pip install 'sparse-spectral-training[hf]' (transformers and accelerate)"


def require_transformers():
    return require_package("transformers",
                           message=f"sst.integrations.hf needs the `transformers` package: {HF_INSTALL}")


def unwrap_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` (itself otherwise)."""
    while hasattr(optimizer, "optimizer") and isinstance(optimizer.optimizer, torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def apply_lr_multiplier(scheduler: torch.optim.lr_scheduler.LRScheduler, method: TrainingMethod) -> None:
    """Make a LambdaLR give base_lr * f(step) * method.lr_multiplier(step); sets the current lr too."""
    if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        raise ConfigError(
            f"lr_scheduler_type: the {type(scheduler).__name__} schedule cannot carry the method's LR factor "
            "(re-warm-ups); use a LambdaLR schedule such as 'cosine', 'linear' or 'constant'")
    if all(getattr(f, "sst_method", None) is method for f in scheduler.lr_lambdas):
        return

    def with_multiplier(f):
        # A plain function: LambdaLR.state_dict stores no state for it (nothing of the method is pickled).
        def factor(step: int) -> float:
            return f(step) * method.lr_multiplier(step)
        factor.sst_method = method
        return factor

    scheduler.lr_lambdas = [with_multiplier(f) for f in scheduler.lr_lambdas]
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def save_method_state(method: TrainingMethod, folder: str | Path) -> Path:
    path = Path(folder) / METHOD_STATE_FILE
    torch.save(method.state_dict(), path)
    return path


def load_method_state(method: TrainingMethod, folder: str | Path) -> None:
    """Load ``folder``/sst_method.pt into ``method``; CheckpointError when it is missing."""
    path = Path(folder) / METHOD_STATE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing; {folder} was not saved by SSTTrainer, so the method's state (its sampler) "
            "cannot be restored and the resume would not be exact")
    method.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def make_callback(method: TrainingMethod):
    """A ``TrainerCallback`` that runs ``method.after_step`` after every optimizer step and writes the
    method's state into every checkpoint folder (rank 0).

    SSTTrainer adds it itself. With a plain Trainer it is only part of the contract: also pass
    ``optimizers=(method.build_optimizer(...), scheduler)`` after ``apply_lr_multiplier(scheduler,
    method)``, and ``load_method_state`` before resuming.
    """
    return _callback_class()(method)


_CALLBACK: list[type] = []
_TRAINER: list[type] = []


def _callback_class() -> type:
    if _CALLBACK:
        return _CALLBACK[0]
    tf = require_transformers()

    class SSTCallback(tf.TrainerCallback):
        """Runs the method's per-step work; saves its state with each Trainer checkpoint."""

        def __init__(self, method: TrainingMethod):
            self.method = method
            self.events: dict[str, float] = {}  # after_step events summed over the run

        def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            # on_step_end follows optimizer.step(), the scheduler step and zero_grad, once per
            # optimizer step; state.global_step already counts the step just taken.
            events = self.method.after_step(model, unwrap_optimizer(optimizer), state.global_step)
            for key, value in events.items():
                self.events[key] = self.events.get(key, 0) + value

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    save_method_state(self.method, folder)

    _CALLBACK.append(SSTCallback)
    return SSTCallback


def _trainer_class() -> type:
    if _TRAINER:
        return _TRAINER[0]
    tf = require_transformers()

    class SSTTrainer(tf.Trainer):
        """``transformers.Trainer`` that trains a converted model the way its method requires.

        ``SSTTrainer(model=model, method=method, args=..., train_dataset=...)`` with ``(model,
        method) = sst.convert(model, config)``. The optimizer is ``method.build_optimizer`` with the
        arguments' learning_rate, weight_decay, adam betas and epsilon.
        """

        def __init__(self, *args, method: TrainingMethod, **kwargs):
            if not isinstance(method, TrainingMethod):
                raise ConfigError(f"SSTTrainer(method=...): expected the method from sst.convert, got {type(method).__name__}")
            self.method = method
            super().__init__(*args, **kwargs)
            record_method(self.model, method.config)  # every checkpoint's config.json names the method
            self.sst_callback = make_callback(method)
            self.add_callback(self.sst_callback)

        def create_optimizer(self, model: nn.Module | None = None):
            if self.optimizer is None:
                a = self.args
                self.optimizer = self.method.build_optimizer(
                    model if model is not None else self.model, a.learning_rate, a.weight_decay,
                    (a.adam_beta1, a.adam_beta2), a.adam_epsilon)
            return self.optimizer

        def create_scheduler(self, num_training_steps: int, optimizer=None):
            scheduler = super().create_scheduler(num_training_steps, optimizer)
            apply_lr_multiplier(scheduler, self.method)
            return scheduler

        def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
            if resume_from_checkpoint is True:
                resume_from_checkpoint = tf.trainer_utils.get_last_checkpoint(self.args.output_dir)
                if resume_from_checkpoint is None:
                    raise CheckpointError(f"resume_from_checkpoint: no checkpoint in {self.args.output_dir}")
            if resume_from_checkpoint:
                load_method_state(self.method, resume_from_checkpoint)
            return super().train(resume_from_checkpoint=resume_from_checkpoint or None, **kwargs)

    _TRAINER.append(SSTTrainer)
    return SSTTrainer


def __getattr__(name: str):
    # The classes derive from transformers' own, so they are made when first asked for.
    if name == "SSTTrainer":
        return _trainer_class()
    if name == "SSTCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["METHOD_STATE_FILE", "SSTCallback", "SSTTrainer", "apply_lr_multiplier", "load_method_state",
           "make_callback", "save_method_state", "unwrap_optimizer"]
