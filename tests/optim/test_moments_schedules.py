import math

import pytest
import torch

from sst.optim import lr_factor, reset_state, state_bytes


def test_reset_state_zeroes_only_named_params():
    a, b = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([a, b], lr=0.1)
    (a.sum() + b.sum()).backward()
    opt.step()
    kept = opt.state[b]["exp_avg"].clone()
    assert reset_state(opt, [a]) == 3  # step, exp_avg, exp_avg_sq
    assert float(opt.state[a]["exp_avg"].abs().max()) == 0 and float(opt.state[a]["step"]) == 0
    assert torch.equal(opt.state[b]["exp_avg"], kept)
    assert state_bytes(opt) == 2 * (3 * 4 * 2 + 4)


def test_schedules():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(99, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(54, 100, 10, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(54, 100, 10, "linear", 0.0) == pytest.approx(0.5)
    assert lr_factor(50, 100, 0, "constant") == 1.0
    assert lr_factor(399, 1000, 100, "inverse_sqrt") == pytest.approx(math.sqrt(100 / 400))
    assert lr_factor(49, 1000, 100, "inverse_sqrt") == pytest.approx(0.5)
