"""eval_mode: eval inside the block, the caller's previous mode afterwards, even after an error."""

import pytest
import torch
from torch import nn

from sst.models.modes import eval_mode


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))


@pytest.mark.parametrize("training", [True, False])
def test_mode_is_eval_inside_and_restored_after(training):
    m = model().train(training)
    with eval_mode(m) as inside:
        assert inside is m
        assert not any(module.training for module in m.modules())
    assert all(module.training == training for module in m.modules())


@pytest.mark.parametrize("training", [True, False])
def test_mode_is_restored_after_an_exception(training):
    m = model().train(training)
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(m):
            raise RuntimeError("boom")
    assert all(module.training == training for module in m.modules())


def test_gradients_are_left_to_the_caller():
    m = model()
    with eval_mode(m):
        assert torch.is_grad_enabled()
        m(torch.ones(1, 2)).sum().backward()
    assert m[0].weight.grad is not None
