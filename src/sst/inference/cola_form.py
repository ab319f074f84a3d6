"""The CoLA form of a model for export: its CoLALinear layers kept as two matrices, y = B SiLU(A x) + b.

The SiLU leaves no dense weight to merge to, so an export stores A (rank, in), B (out, rank) and b
per layer, and ``cola.json`` records each layer's shape and rank; ``cola_model`` gives the task's
plain model empty CoLALinear layers of those shapes, so the saved tensors load strictly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from sst.errors import CheckpointError
from sst.methods.cola_linear import CoLALinear
from sst.methods.surgery import replace_modules


@dataclass
class CoLAShape:
    """One CoLALinear's shape: A (rank, in_features), B (out_features, rank), bias (out,) if use_bias."""

    in_features: int
    out_features: int
    rank: int
    use_bias: bool

    def as_dict(self) -> dict:
        return asdict(self)


def cola_layers(model: nn.Module) -> dict[str, CoLALinear]:
    """Dotted names -> every CoLALinear of ``model``, in order."""
    return {name: m for name, m in model.named_modules() if name and isinstance(m, CoLALinear)}


def cola_shapes(model: nn.Module) -> dict[str, CoLAShape]:
    """Dotted names -> the shape of every CoLALinear of ``model`` (what ``cola.json`` holds)."""
    return {name: CoLAShape(m.in_features, m.out_features, m.rank, m.bias is not None)
            for name, m in cola_layers(model).items()}


def cola_model(model: nn.Module, shapes: dict[str, dict | CoLAShape], source: str = "cola.json") -> nn.Module:
    """Replace the layers that ``shapes`` names by empty CoLALinear of those shapes; returns ``model``.

    Each named layer must exist with the recorded in/out features (else CheckpointError naming
    ``source``); the new layers take its device and dtype. Values come from the saved state dict.
    """
    modules = dict(model.named_modules())
    parsed = {n: s if isinstance(s, CoLAShape) else CoLAShape(**s) for n, s in shapes.items()}
    for name, shape in parsed.items():
        layer = modules.get(name)
        if layer is None:
            raise CheckpointError(f"{source}: layer {name!r} is not in {type(model).__name__}")
        if (getattr(layer, "in_features", None), getattr(layer, "out_features", None)) != (
                shape.in_features, shape.out_features):
            raise CheckpointError(f"{source}: layer {name!r} is {shape.out_features}x{shape.in_features} there "
                                  f"but {type(layer).__name__} {getattr(layer, 'out_features', '?')}x"
                                  f"{getattr(layer, 'in_features', '?')} in {type(model).__name__}")

    def empty(name: str, layer: nn.Module) -> CoLALinear:
        shape, weight = parsed[name], next(layer.parameters())
        return CoLALinear(shape.in_features, shape.out_features, shape.rank, use_bias=shape.use_bias,
                          device=weight.device, dtype=weight.dtype)

    replace_modules(model, {n: modules[n] for n in parsed}, empty)
    return model
