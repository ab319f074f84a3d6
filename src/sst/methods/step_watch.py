"""A guard for converted models trained outside the method's hooks (a bare loop or ``Trainer``).

A method is followed when every optimizer step of its model is taken by an optimizer that
``method.build_optimizer`` built, and ``method.after_step`` runs after each. ``watch_steps`` checks
both from a global optimizer pre-step hook and warns (``MissedStepWarning``) once per model:
the wrong optimizer at the first step; a missing ``after_step`` at the step after it was due.
"""

from __future__ import annotations

import warnings
import weakref

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch import nn

from sst.methods.base import TrainingMethod

FIX = ("train with sst.integrations.hf.SSTTrainer (transformers.Trainer), or build the optimizer "
       "with method.build_optimizer(model, lr) and call method.after_step(model, optimizer, step) "
       "after every optimizer step")


class MissedStepWarning(UserWarning):
    """A converted model trains while its method's optimizer or per-step work is skipped."""


def needs_step_hooks(method: TrainingMethod) -> bool:
    """True when ``method`` overrides the optimizer, its parameter groups, ``after_step`` or the LR
    factor: skipping them changes the training (full-rank and LoRA lose nothing)."""
    kind = type(method)
    return any(getattr(kind, hook) is not getattr(TrainingMethod, hook)
               for hook in ("build_optimizer", "param_groups", "after_step", "lr_multiplier"))


class StepWatch:
    """Counts ``after_step`` calls of one method and checks each optimizer step of its model."""

    def __init__(self, model: nn.Module, method: TrainingMethod):
        self.model_name = type(model).__name__
        self.method_name = method.config.name or type(method).__name__
        self.params: dict[int, weakref.ref] = {}  # id -> the tensor (ids of freed tensors are reused)
        self.watch([p for p in model.parameters() if p.requires_grad])
        self.model = weakref.ref(model)
        self.method = weakref.ref(method)
        self.after_steps = 0
        self.optimizer_steps = 0
        self.warned = False

    def watch(self, params: list[torch.Tensor]) -> None:
        self.params.update({id(p): weakref.ref(p) for p in params})

    def alive(self) -> bool:
        return self.model() is not None and self.method() is not None

    def owns(self, optimizer: torch.optim.Optimizer) -> bool:
        return any(self.params.get(id(p), _dead)() is p for g in optimizer.param_groups for p in g["params"])

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called before each optimizer step that updates this model's parameters."""
        method = self.method()
        if method is None or self.warned:
            return
        self.optimizer_steps += 1
        problem = None
        if getattr(optimizer, "_sst_method", None) is not method:
            problem = (f"its optimizer ({type(optimizer).__name__}) was not built by the method's "
                       "build_optimizer (GaLore becomes full-rank AdamW, SST loses its parameter groups)")
        elif self.after_steps < self.optimizer_steps - 1:
            problem = f"method.after_step did not run after optimizer step {self.after_steps + 1}"
        if problem:
            self.warned = True
            warnings.warn(
                f"sst: the {self.model_name} converted by method {self.method_name!r} is training without "
                f"the method's hooks: {problem}; the method's work (re-sampling, re-SVD, merges, LR "
                f"re-warm-ups) is silently skipped. Fix: {FIX}.", MissedStepWarning, stacklevel=3)


def _dead() -> None:
    return None


_WATCHES: list[StepWatch] = []
_HOOK: list = []


def _pre_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    for watch in list(_WATCHES):
        if not watch.alive():
            _WATCHES.remove(watch)
        elif watch.owns(optimizer):
            watch.before_step(optimizer)


def watch_steps(model: nn.Module, method: TrainingMethod) -> None:
    """Warn when ``model`` trains without ``method``'s optimizer or ``after_step`` (see module doc).

    Wraps ``method.after_step`` and ``method.build_optimizer`` on this instance to count calls and
    tag the optimizers it builds; a no-op for methods that need no hooks.
    """
    if not needs_step_hooks(method) or getattr(method, "_sst_watch", None) is not None:
        return
    watch = StepWatch(model, method)
    after_step, build_optimizer = method.after_step, method.build_optimizer

    def counted_after_step(*args, **kwargs):
        watch.after_steps += 1
        return after_step(*args, **kwargs)

    def tagged_build_optimizer(*args, **kwargs):
        optimizer = build_optimizer(*args, **kwargs)
        optimizer._sst_method = method
        watch.watch([p for g in optimizer.param_groups for p in g["params"]])
        return optimizer

    method.after_step, method.build_optimizer = counted_after_step, tagged_build_optimizer
    method._sst_watch = watch
    _WATCHES.append(watch)
    if not _HOOK:
        _HOOK.append(register_optimizer_step_pre_hook(_pre_step))
