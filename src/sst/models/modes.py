"""Temporary module modes: run a block with a model in eval mode, then restore its own mode.

eval_mode(model): mode_before = model.training; model.eval(); <block>; model.train(mode_before),
also when the block raises. Gradients are untouched: combine with ``torch.no_grad()`` as needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the ``with`` block (yields it) and restore its previous mode.

    Only the root's ``training`` flag is saved: on exit ``model.train(flag)`` gives it to every
    submodule, so a submodule kept in eval mode inside a training model comes back training.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
