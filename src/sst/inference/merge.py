"""Merge for inference: every factored layer becomes one plain nn.Linear with the same function.

SpectralLinear: W = U diag(S) Vh; LoRALinear: W = W0 + (alpha / r) B A; LowRankLinear:
W = U_k diag(S_k) Vh_k. The merged model has no extra latency and no dependency on ``sst``'s
layer classes, so its state dict loads into the model class the task builds.
"""

from __future__ import annotations

from torch import nn

from sst.methods.surgery import replace_modules
from sst.spectral.factored import FactoredLinear


def mergeable_layers(model: nn.Module) -> dict[str, FactoredLinear]:
    """Dotted names -> every FactoredLinear of ``model`` (the layers ``merge_model`` replaces), in order."""
    return {name: m for name, m in model.named_modules() if name and isinstance(m, FactoredLinear)}


def merge_model(model: nn.Module) -> nn.Module:
    """Replace every FactoredLinear of ``model`` in place by its ``to_dense()``; returns ``model``.

    The dense weight is built in the layer's own dtype; merging is exact up to that rounding.
    """
    layers = mergeable_layers(model)
    replace_modules(model, layers, lambda _, layer: layer.to_dense())
    return model
