"""Activation recomputation (activation checkpointing): keep only each block's inputs for backward.

For a stack y = f_L(... f_1(x)), the forward of every block f_i runs without saving its
intermediate tensors; backward re-runs f_i from its saved input and then differentiates it. Memory
for activations drops from sum_i |act(f_i)| to sum_i |input(f_i)| + max_i |act(f_i)|, for about
one more forward pass of compute. Gradients are unchanged (the random state is replayed).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sst.errors import ConfigError

KEY = "train.activation_checkpointing"


class RecomputedForward:
    """A block's forward that runs under ``checkpoint(..., use_reentrant=False)`` while it trains.

    Set as the instance attribute ``block.forward``, so that the block keeps its place in the
    module tree and every state-dict key stays the same. Without gradients (evaluation,
    generation with a cache) or in eval mode it is the plain forward: there is no backward to
    replay it for. It calls the class's forward on ``block``, so ``copy.deepcopy`` and pickling of
    the model carry it over to the copy.
    """

    def __init__(self, block: nn.Module):
        self.block = block

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        return type(self.block).forward(self.block, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.block.training and torch.is_grad_enabled():
            return checkpoint(self._forward, *args, use_reentrant=False, **kwargs)
        return self._forward(*args, **kwargs)


def recomputed_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of one of our models: the members of the ``nn.ModuleList`` attributes it
    names in its class attribute ``recomputed_blocks`` (a tuple of attribute names, e.g.
    ``("layers",)`` for LLaMA, ``("encoder", "decoder")`` for the translation Transformers).
    Empty if the model names none."""
    blocks = []
    for name in getattr(type(model), "recomputed_blocks", ()):
        stack = getattr(model, name, None)
        if not isinstance(stack, nn.ModuleList):
            raise TypeError(f"{type(model).__name__}.recomputed_blocks names {name!r}, which is not an nn.ModuleList")
        blocks.extend(stack)
    return blocks


def is_recomputed(block: nn.Module) -> bool:
    return isinstance(block.__dict__.get("forward"), RecomputedForward)


def checkpointed_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of ``model`` that recompute their activations in backward: ours (wrapped by
    ``apply_activation_checkpointing``), else the innermost modules Hugging Face flags (its decoder
    layers; older versions flag only the stack). Empty for a model not treated."""
    ours = [m for m in model.modules() if is_recomputed(m)]
    if ours:
        return ours
    flagged = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    return [m for m in flagged if not any(c is not m and c in flagged for c in m.modules())]


def _enable_hf(model: nn.Module) -> int:
    """Hugging Face's own checkpointing (non-reentrant); returns the number of flagged blocks."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{KEY}: the Hugging Face model {type(model).__name__} does not support it; set {KEY}=false")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return len(checkpointed_blocks(model))


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Recompute the activations of every repeated block of ``model`` in backward; returns how many
    blocks now do (a model already treated is left as it is and counted again).

    Our models name their block lists (``recomputed_blocks``); Hugging Face models use their own
    ``activation_checkpointing_enable`` / ``gradient_checkpointing_enable``. Apply it after the
    method's surgery and before DDP / ``torch.compile``. ConfigError if the model has no blocks.
    """
    blocks = recomputed_blocks(model)
    if not blocks and hasattr(model, "gradient_checkpointing_enable"):
        return _enable_hf(model)
    if not blocks:
        raise ConfigError(
            f"{KEY}: the model {type(model).__name__} has no repeated blocks to recompute "
            f"(it names none in `recomputed_blocks`); set {KEY}=false"
        )
    for block in blocks:
        if not is_recomputed(block):
            block.forward = RecomputedForward(block)
    return len(blocks)
