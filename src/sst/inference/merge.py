"""Merge for inference: every factored layer becomes one plain nn.Linear with the same function.

SpectralLinear: W = U diag(S) Vh; LoRALinear: W = W0 + (alpha / r) B A; LowRankLinear:
W = U_k diag(S_k) Vh_k. The merged model has no extra latency and no dependency on ``sst``'s
layer classes, so its state dict loads into the model class the task builds. A method that
changes the architecture (CoLA's B SiLU(A x)) has no such form: its layers stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sst.errors import ConfigError
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


def unmergeable_layers(model: nn.Module, plain: nn.Module) -> list[str]:
    """Names of the layers of ``model`` that no merge turns into the task's own model ``plain``.

    Those are modules holding state-dict entries that ``plain`` lacks and that are not inside a
    FactoredLinear (which merges): the layers of a method that changed the architecture.
    """
    expected = set(plain.state_dict())
    factored = list(mergeable_layers(model))
    found = set()
    for key in model.state_dict():
        owner = key.rpartition(".")[0]
        if key not in expected and not any(owner == f or owner.startswith(f + ".") for f in factored):
            found.add(owner)
    return sorted(found)


def require_mergeable(model: nn.Module, build_plain: Callable[[], nn.Module], action: str) -> None:
    """Raise ConfigError if ``model`` has layers that ``action`` cannot turn into the plain model.

    ``build_plain`` builds the task's own model (under a forked RNG, so the caller's stream is
    unchanged); the message names the layers, their class, and the way out.
    """
    with torch.random.fork_rng(devices=[]):
        layers = unmergeable_layers(model, build_plain())
    if layers:
        kind = type(model.get_submodule(layers[0])).__name__
        shown = ", ".join(repr(n) for n in layers[:3]) + (", ..." if len(layers) > 3 else "")
        raise ConfigError(
            f"{action}: {len(layers)} layer(s) ({shown}) are {kind}, a changed architecture with no dense "
            f"weight (not a linear map); use the run directory itself (sst eval, sst generate keep that form)"
        )
