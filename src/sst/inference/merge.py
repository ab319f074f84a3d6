"""Merge for inference: every factored layer becomes one plain nn.Linear with the same function.

SpectralLinear: W = U diag(S) Vh; LoRALinear: W = W0 + (alpha / r) B A; LowRankLinear:
W = U_k diag(S_k) Vh_k. The merged model has no extra latency and no dependency on ``sst``'s
layer classes, so its state dict loads into the model class the task builds.
"""

from __future__ import annotations

from torch import nn

from sst.methods.lora import LoRALinear
from sst.methods.surgery import replace_modules
from sst.spectral.linear import SpectralLinear


def mergeable_types() -> tuple[type, ...]:
    """Layer classes that ``merge_model`` turns back into nn.Linear (each has ``to_dense()``)."""
    from sst.inference.lowrank import LowRankLinear

    return (SpectralLinear, LoRALinear, LowRankLinear)


def mergeable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Dotted names -> every SpectralLinear / LoRALinear / LowRankLinear of ``model``, in order."""
    types = mergeable_types()
    return {name: m for name, m in model.named_modules() if name and isinstance(m, types)}


def merge_model(model: nn.Module) -> nn.Module:
    """Replace every factored layer of ``model`` in place by its dense nn.Linear; returns ``model``.

    The dense weight is built in the layer's own dtype; merging is exact up to that rounding.
    """
    layers = mergeable_layers(model)
    replace_modules(model, layers, lambda _, layer: layer.to_dense())
    return model
