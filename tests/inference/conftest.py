"""Shared fixtures for the inference tests: tiny trained LM runs (a few steps) on the root ``corpus``."""

from __future__ import annotations

import pytest
import torch


def lm_config(corpus, out_dir, method: dict, model: str = "tiny", steps: int = 4) -> dict:
    return {
        "task": {"name": "lm", "model": model, "data": [str(corpus)], "vocab_size": 300, "seq_len": 16,
                 "batch_size": 2, "val_fraction": 0.1, "cache_dir": str(corpus.parent / "cache")},
        "method": method,
        "train": {"steps": steps, "progress": False, "lr": 3e-3},
        "out_dir": str(out_dir),
    }


def train_run(corpus, out_dir, method: dict, model: str = "tiny"):
    from sst.config import build_config
    from sst.train.loop import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(build_config(lm_config(corpus, out_dir, method, model)))
    finally:
        torch.set_num_threads(threads)
    return out_dir


@pytest.fixture(scope="session")
def sst_run(corpus, tmp_path_factory):
    """A run directory (best/, last/) of SST on the tiny LLaMA, rank 4, 4 steps."""
    return train_run(corpus, tmp_path_factory.mktemp("runs") / "sst",
                     {"name": "sst", "rank": 4, "resample_every": 2})


@pytest.fixture(scope="session")
def full_run(corpus, tmp_path_factory):
    """A full-rank run directory on the same data."""
    return train_run(corpus, tmp_path_factory.mktemp("runs") / "full", {"name": "full"})


@pytest.fixture(scope="session")
def make_run(corpus):
    """make_run(out_dir, method_dict, model="tiny") trains a tiny LM run and returns its directory."""
    return lambda out_dir, method, model="tiny": train_run(corpus, out_dir, method, model)
