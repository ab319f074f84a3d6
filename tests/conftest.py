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


CORPUS_WORDS = ("the a spectral singular value low rank training model layer matrix vector sample round "
                "iteration merge prune dense sparse").split()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Back to one thread for every module, whatever an earlier test set (small SVDs on a busy
    2-core machine can spend ~1 s each spinning up BLAS threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A tiny plain-text LM corpus (40 documents of 60 words) in a session folder."""
    import random

    rng = random.Random(0)
    docs = [" ".join(rng.choice(CORPUS_WORDS) for _ in range(60)) for _ in range(40)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(docs))
    return path
