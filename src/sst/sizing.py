"""Training memory, estimated before anything is allocated, by building the model on the meta device.

bytes = parameters + gradients + optimizer state (2 AdamW moments per trainable element, an upper
bound for GaLore) + buffers + activations: what autograd saves in a meta forward of micro-batch 0
(float32: an upper bound under bf16 autocast). Activation checkpointing: activations = what the
checkpointed forward saves (block inputs, embeddings, head, loss) + max_i saved(block i), held again
while block i is recomputed. Over ``PROBE_LAYERS`` layers: probes at 1 and 2 layers, extrapolated linearly.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from sst.devices import available_memory
from sst.errors import ConfigError, SSTError
from sst.methods import MethodConfig, build_method
from sst.models.recompute import apply_activation_checkpointing, checkpointed_blocks
from sst.tasks import Task, move_to

PROBE_LAYERS = 16  # deeper models are measured at 1 and 2 layers (a million meta layers take minutes)
ADAM_MOMENTS = 2
SKIP_ENV = "SST_NO_MEMORY_CHECK"  # "1": train without this check (e.g. when the estimate is too cautious)
_INIT_METHODS = {"normal_", "uniform_", "fill_", "zero_", "copy_", "exponential_", "random_",
                 "bernoulli_", "cauchy_", "log_normal_", "geometric_", "erfinv_"}
_BATCH_KEYS = ("batch_size", "seq_len", "max_tokens")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training process needs; ``activations`` is None when they could not be measured."""

    parameters: int
    gradients: int
    optimizer: int
    buffers: int
    activations: int | None = None

    @property
    def state(self) -> int:
        """Parameters, gradients, optimizer state and buffers: what lives for the whole run."""
        return self.parameters + self.gradients + self.optimizer + self.buffers

    @property
    def total(self) -> int:
        return self.state + (self.activations or 0)

    def sharded(self, shards: int) -> "MemoryEstimate":
        """One rank's share when FSDP2 splits the state over ``shards`` ranks (activations stay)."""
        part = lambda n: -(-n // shards)  # noqa: E731  (ceil: a rank holds the larger half)
        return dataclasses.replace(self, parameters=part(self.parameters), gradients=part(self.gradients),
                                   optimizer=part(self.optimizer), buffers=part(self.buffers))


class _ShapesOnly(TorchFunctionMode):
    """Skip the initialisers of meta tensors (they change no shape and are the slowest part of a
    meta build) and read any scalar of a meta tensor as 1 (e.g. a loss's unit count)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        first = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(first, torch.Tensor) and first.is_meta:
            if name in _INIT_METHODS or getattr(func, "__module__", "") == "torch.nn.init":
                return first
            if name == "__float__" or (name == "item" and first.is_floating_point()):
                return 1.0
            if name in ("__int__", "__index__", "item"):
                return 1
        return func(*args, **kwargs)


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _meta_model(task: Task, method: MethodConfig) -> nn.Module | None:
    # None: some constructor or surgery computes with values, which meta tensors do not have.
    try:
        with torch.device("meta"), _ShapesOnly():
            return build_method(method).prepare_model(task.build_model())
    except SSTError:  # the user's error (a target matching nothing, ...): the real build raises it too
        raise
    except Exception:  # a meta-only failure must never stop a run that would work: no check then
        return None


def _state(model: nn.Module) -> MemoryEstimate:
    params = list(model.parameters())
    trainable = _bytes(p for p in params if p.requires_grad)
    return MemoryEstimate(_bytes(params), trainable, ADAM_MOMENTS * trainable, _bytes(model.buffers()))


def _saved_bytes(task: Task, model: nn.Module, batch: Any, blocks: Sequence[nn.Module] = ()) -> tuple[int, int] | None:
    """(bytes of the tensors saved for backward by ``task.loss`` on the meta batch, the most of them
    saved inside one of ``blocks``); None if some operation has no meta kernel or branches on a value."""
    saved: dict[int, torch.Tensor] = {}
    per_block: list[dict[int, torch.Tensor]] = [{} for _ in blocks]
    running: list[int] = []  # the blocks whose forward is on the stack, outermost first
    own = {id(t) for t in (*model.parameters(), *model.buffers())}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.setdefault(id(t), t)  # a tensor saved by several operations is stored once
        if running:
            per_block[running[0]].setdefault(id(t), t)
        return t

    def activation_bytes(tensors: dict[int, torch.Tensor]) -> int:
        return _bytes(t for k, t in tensors.items() if k not in own and not (t.is_leaf and t.requires_grad))

    def leave(*_: Any) -> None:  # a forward hook's result would replace the block's output
        running.pop()

    hooks = [h for i, block in enumerate(blocks) for h in (
        block.register_forward_pre_hook(lambda *_, i=i: running.append(i)), block.register_forward_hook(leave))]
    try:
        with _ShapesOnly(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            task.loss(model, move_to(batch, torch.device("meta")))
    except Exception:  # e.g. autocast has no meta device type (the hyperbolic Transformer)
        return None
    finally:
        for hook in hooks:
            hook.remove()
    return activation_bytes(saved), max(map(activation_bytes, per_block), default=0)


def _recomputed_saved_bytes(task: Task, model: nn.Module, batch: Any) -> tuple[int, int] | None:
    """With activation checkpointing: (bytes the checkpointed forward saves, the most one block
    saves in the plain forward, i.e. while it is recomputed in backward); None as ``_saved_bytes``."""
    try:
        recomputed = copy.deepcopy(model)
        apply_activation_checkpointing(recomputed)
    except SSTError:  # a model without blocks: the ConfigError the real run raises too
        raise
    except Exception:  # a meta-only failure: no estimate rather than a refusal
        return None
    treated = {id(block) for block in checkpointed_blocks(recomputed)}
    blocks = [model.get_submodule(name) for name, m in recomputed.named_modules() if id(m) in treated]
    plain, checkpointed = _saved_bytes(task, model, batch, blocks), _saved_bytes(task, recomputed, batch)
    if plain is None or checkpointed is None:
        return None
    return checkpointed[0], plain[1]


class _MetaRun:
    """The meta model(s) of a task: the model itself, or probes at 1 and 2 layers for deep ones."""

    def __init__(self, task: Task, method: MethodConfig, activation_checkpointing: bool = False):
        self.activation_checkpointing = activation_checkpointing
        self.n_layers = getattr(task.config, "n_layers", 0)
        deep = isinstance(self.n_layers, int) and self.n_layers > PROBE_LAYERS
        self.built: list[tuple[Task, nn.Module | None]] = []
        for depth in (1, 2) if deep else (0,):
            probe = copy.copy(task)  # shares the loaded data; only the depth may differ
            if depth:
                probe.config = dataclasses.replace(task.config, n_layers=depth)
            self.built.append((probe, _meta_model(probe, method)))

    @property
    def ok(self) -> bool:
        return all(model is not None for _, model in self.built)

    def combine(self, values: list[int | None]) -> int | None:
        """One value, or the values at 1 and 2 layers extended linearly to ``n_layers``."""
        if any(v is None for v in values):
            return None
        return values[0] if len(values) == 1 else values[0] + (values[1] - values[0]) * (self.n_layers - 1)

    def state(self) -> MemoryEstimate:
        states = [_state(model) for _, model in self.built]
        return MemoryEstimate(*(self.combine([getattr(s, f) for s in states])
                                for f in ("parameters", "gradients", "optimizer", "buffers")))

    def activations(self, batch: Any) -> int | None:
        """Saved bytes (sizing's docstring); with checkpointing, the stored part is extrapolated and
        the largest block's replay added once."""
        measure = _recomputed_saved_bytes if self.activation_checkpointing else _saved_bytes
        measured = [measure(task, model, batch) for task, model in self.built]
        if any(m is None for m in measured):
            return None
        return self.combine([m[0] for m in measured]) + max(m[1] for m in measured)


def estimate_training_memory(task: Task, method: MethodConfig, device: torch.device | None = None,
                             activation_checkpointing: bool = False, shards: int = 1) -> MemoryEstimate | None:
    """Training memory of ``task`` with ``method`` (None: the model cannot be built on meta), with
    or without ``train.activation_checkpointing``, per rank when FSDP2 shards it over ``shards``.

    The task's data is loaded and micro-batch 0 read on the CPU; the model exists only on the meta
    device. With ``device``, a ``ConfigError`` is raised as soon as a part is known not to fit
    (parameters and optimizer state first, so an absurd depth is refused before any forward).
    """
    with torch.random.fork_rng(devices=[]):  # leave the caller's seeded RNG exactly as it was
        batch = task.train_batch(0)
        meta = _MetaRun(task, method, activation_checkpointing)
        if not meta.ok:
            return None
        estimate = meta.state().sharded(shards)
        if device is not None:
            check_fits(estimate, device, task.config)
        estimate = dataclasses.replace(estimate, activations=meta.activations(batch))
    if device is not None:
        check_fits(estimate, device, task.config)
    return estimate


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f}" if n >= 2**30 / 10 else f"{n / 2**30:.3f}"


def check_fits(estimate: MemoryEstimate, device: torch.device, task_config: Any) -> None:
    """ConfigError giving the estimate and the free memory when the run cannot fit on ``device``."""
    free = available_memory(device)
    if free is None:
        return
    available, source = free
    where = f"{_gib(available)} GiB are available on {device} ({source}); set {SKIP_ENV}=1 to try anyway"
    if estimate.state > available:
        raise ConfigError(
            f"task: the model would need ~{_gib(estimate.state)} GiB for parameters, gradients and "
            f"optimizer state, but {where}"
        )
    if estimate.total > available:
        keys = [f"task.{k}" for k in _BATCH_KEYS if hasattr(task_config, k)]
        raise ConfigError(
            f"{'/'.join(keys) or 'task'}: one micro-batch would need ~{_gib(estimate.activations)} GiB "
            f"of activations on top of ~{_gib(estimate.state)} GiB for parameters, gradients and "
            f"optimizer state, but {where}"
        )


def check_training_memory(task: Task, method: MethodConfig, device: torch.device,
                          activation_checkpointing: bool = False, shards: int = 1) -> MemoryEstimate | None:
    """Refuse (ConfigError) a run that cannot fit on ``device``; -> the estimate (None: none possible,
    or the check is switched off by ``SST_NO_MEMORY_CHECK=1``)."""
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return None
    return estimate_training_memory(task, method, device, activation_checkpointing, shards)


__all__ = ["MemoryEstimate", "PROBE_LAYERS", "SKIP_ENV", "check_fits", "check_training_memory",
           "estimate_training_memory"]
