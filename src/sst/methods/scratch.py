"""Layers trained from scratch: a new layer of a dense linear's shape keeps only that linear's bias.

SLTrain and CoLA replace each target nn.Linear by a freshly initialised layer: the dense weight
is discarded, the bias (which the model initialised, often to zero) is copied.
"""

from __future__ import annotations

import torch
from torch import nn


def from_scratch(layer: nn.Module, linear: nn.Linear, generator: torch.Generator | None = None) -> nn.Module:
    """Copy ``linear``'s bias into ``layer``, then ``layer.reset_parameters_(generator)``; -> ``layer``.

    A meta-device ``linear`` (a model built without storage) leaves ``layer`` uninitialised.
    """
    if not linear.weight.is_meta:
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        layer.reset_parameters_(generator)
    return layer
