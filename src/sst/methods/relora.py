"""ReLoRA*: LoRA whose factors are merged into W0 and restarted every ``reset_every`` steps.

At a restart W0 <- W0 + (alpha / r) B A, A <- Kaiming, B <- 0 (function unchanged), the Adam
moments of A and B are zeroed and the LR re-warms. ``warm_start_steps`` > 0 trains W0 at full
rank first (original ReLoRA); the default 0 is the paper's ReLoRA*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from sst.methods.base import require_finite, restart_warmup
from sst.schema import ConfigError, check_range
from sst.methods.lora import LoRAConfig, LoRALinear, LoRAMethod
from sst.optim.moments import reset_state
from sst.shards import gathered


@dataclass
class ReLoRAConfig(LoRAConfig):
    interval_key: ClassVar[str | None] = "reset_every"

    name: str = "relora"
    reset_every: int = 200
    restart_warmup_steps: int = 10
    warm_start_steps: int = 0

    def __post_init__(self):
        super().__post_init__()
        check_range("method.reset_every", self.reset_every, low=1)
        check_range("method.restart_warmup_steps", self.restart_warmup_steps, low=0)
        check_range("method.warm_start_steps", self.warm_start_steps, low=0)


class ReLoRAMethod(LoRAMethod):
    def prepare_model(self, model: nn.Module) -> nn.Module:
        super().prepare_model(model)
        if self.config.warm_start_steps > 0:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                raise ConfigError(
                    "method.warm_start_steps > 0 switches W0 from trainable to frozen mid-run, "
                    "which DDP and FSDP cannot follow; use 0 (ReLoRA*) for distributed runs"
                )
            for layer in self._layers(model):
                layer.weight.requires_grad_(True)
        return model

    @staticmethod
    def _layers(model: nn.Module) -> list[LoRALinear]:
        return [m for m in model.modules() if isinstance(m, LoRALinear)]

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> dict:
        cfg = self.config
        layers = self._layers(model)
        if cfg.warm_start_steps and step == cfg.warm_start_steps:
            for layer in layers:  # end of the full-rank warm start: W0 freezes for good
                layer.weight.requires_grad_(False)
                layer.weight.grad = None
                optimizer.state.pop(layer.weight, None)
        if step % cfg.reset_every != 0:
            return {}
        require_finite([t for layer in layers for t in (layer.lora_A, layer.lora_B)], "LoRA factors")
        for layer in layers:
            with gathered(layer):  # under FSDP2: this layer's W0, A, B whole on every rank
                layer.merge_()
                layer.reset_factors_(self.generator)
        reset_state(optimizer, [p for layer in layers for p in (layer.lora_A, layer.lora_B)])
        return {"relora_merges": len(layers)}

    def lr_multiplier(self, step: int) -> float:
        return restart_warmup(step, self.config.reset_every, self.config.restart_warmup_steps)
