"""Shared fixtures: deterministic seeds and small float64 models."""

import pytest
import torch
from torch import nn

# Test models are tiny: one thread avoids thread start-up and contention costs that dominate
# their run time (and small SVDs), especially on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class TinyMLP(nn.Module):
    """Two hidden linears and an output head: enough structure for surgery tests."""

    def __init__(self, d_in=12, d_hidden=20, d_out=6, dtype=torch.float64):
        super().__init__()
        self.up = nn.Linear(d_in, d_hidden, dtype=dtype)
        self.mid = nn.Linear(d_hidden, d_hidden, dtype=dtype)
        self.lm_head = nn.Linear(d_hidden, d_out, dtype=dtype)

    def forward(self, x):
        return self.lm_head(torch.tanh(self.mid(torch.tanh(self.up(x)))))


@pytest.fixture
def tiny_mlp():
    return TinyMLP()


@pytest.fixture(autouse=True, scope="session")
def _shared_cache(tmp_path_factory):
    """One tokenizer/token cache for the whole session (training a tokenizer takes ~1 s)."""
    import os

    if "SST_CACHE_DIR" not in os.environ:
        os.environ["SST_CACHE_DIR"] = str(tmp_path_factory.mktemp("sst-cache"))
    yield

