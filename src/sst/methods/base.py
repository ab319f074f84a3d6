"""The training-method interface: how full-rank, LoRA, ReLoRA*, GaLore and SST plug into one loop.

A method prepares the model (module surgery), names its parameter groups and optimizer, acts after
each optimizer step (re-sampling, merging, re-SVD, moment resets) and scales the LR
(``lr_multiplier``, the per-iteration re-warm-up). Its own state is tensors and plain values only.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import nn

from sst.errors import NonFiniteError
from sst.schema import ConfigError, check_value
from sst.methods.surgery import DEFAULT_EXCLUDE
from sst.shards import full, is_sharded


@dataclass
class MethodConfig:
    """Fields every method shares: which layers it targets (name patterns or "all-linear").

    Class-level facts for comparisons: ``interval_key`` names the field that plays SST's
    "iteration" (one value sets them all), ``role`` is the method's part in the gap-reduction
    formula (``reference`` full-rank, ``baseline`` LoRA-like, ``subject`` SST, ``peer`` others),
    ``default_in_comparisons`` whether ``sst compare`` without ``--methods`` trains it.
    """

    interval_key: ClassVar[str | None] = None
    role: ClassVar[Literal["reference", "baseline", "subject", "peer"]] = "peer"
    default_in_comparisons: ClassVar[bool] = True

    name: str = ""
    # A single pattern may be given as a string ("all-linear"); it becomes a one-item list.
    target_modules: list[str] | str = field(default_factory=lambda: ["all-linear"])
    exclude_modules: list[str] | str = field(default_factory=lambda: list(DEFAULT_EXCLUDE))

    def __post_init__(self):
        # Python callers bypass the YAML loader: check every field's type here as well.
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value(getattr(self, f.name), hints[f.name], f"method.{f.name}"))
        for key in ("target_modules", "exclude_modules"):
            if isinstance(getattr(self, key), str):
                setattr(self, key, [getattr(self, key)])
        if not self.target_modules:
            raise ConfigError("method.target_modules: must name at least one pattern or 'all-linear'")


class TrainingMethod:
    """Default behaviour (full-rank AdamW); subclasses override the hooks they need."""

    def __init__(self, config: MethodConfig, seed: int = 0):
        self.config = config
        self.generator = torch.Generator().manual_seed(int(seed) + 7919)
        self.svd_seconds = 0.0

    # -- model ---------------------------------------------------------------------------------
    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Replace target layers in place (nothing for full-rank); returns ``model``."""
        return model

    # -- optimizer -----------------------------------------------------------------------------
    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """Trainable parameters split into decayed (matrices) and non-decayed (vectors) groups."""
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def build_optimizer(
        self, model: nn.Module, lr: float, weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    ) -> torch.optim.Optimizer:
        groups = [g for g in self.param_groups(model, weight_decay) if g["params"]]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **adamw_kernel(groups))

    # -- per-step events -----------------------------------------------------------------------
    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> dict:
        """Called once per optimizer step (never per micro-step); ``step`` counts completed steps."""
        return {}

    def lr_multiplier(self, step: int) -> float:
        """Factor on the global schedule for the update after ``step`` completed steps."""
        return 1.0

    # -- reporting -----------------------------------------------------------------------------
    def report(self) -> dict:
        """Facts about the method that a run's results record (its rank, time spent in SVDs)."""
        return {"rank": getattr(self.config, "rank", None), "svd_seconds": self.svd_seconds}

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "svd_seconds": self.svd_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.svd_seconds = float(state.get("svd_seconds", 0.0))


def adamw_kernel(groups: list[dict]) -> dict:
    """``fused=True`` when every parameter is a float tensor on a CPU or CUDA device (one kernel
    for all tensors instead of a loop over them: SST and LoRA train many small tensors; FSDP2's
    sharded parameters too, so that sharded and single-device runs take the same kernel);
    otherwise torch's default (foreach where supported)."""
    params = [p for g in groups for p in g["params"]]
    fusable = params and all(
        p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
        and (type(p.data) is torch.Tensor or is_sharded(p)) for p in params)
    return {"fused": True} if fusable else {}


def restart_warmup(step: int, every: int, warmup: int) -> float:
    """Linear re-warm-up over the first ``warmup`` steps of every interval after the first."""
    if warmup <= 0 or step < every:
        return 1.0
    return min(1.0, ((step % every) + 1) / warmup)


def broadcast_tensors(tensors: list[torch.Tensor]) -> None:
    """In a distributed run, copy rank 0's values into every rank (no-op otherwise)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for t in tensors:
            torch.distributed.broadcast(t.data, src=0)


def require_finite(tensors: list[torch.Tensor], what: str) -> None:
    """Raise NonFiniteError naming ``what`` unless every tensor is finite (one device sync).

    Methods call it before structural work (re-sampling, re-SVD, merging), which would turn a
    non-finite value into a crash deep inside torch instead of the loop's clean divergence stop.
    """
    tensors = [full(t.detach()) for t in tensors]  # every rank judges the whole tensors alike
    if tensors and not bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
        bad = sum(not bool(t.isfinite().all()) for t in tensors)
        raise NonFiniteError(f"{bad} of {len(tensors)} {what} hold NaN or infinite values")
