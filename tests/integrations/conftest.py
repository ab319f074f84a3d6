"""Fixtures for the integration tests: one thread, and a tiny corpus for LM runs."""

from __future__ import annotations

import random

import pytest
import torch

WORDS = "the a spectral singular value low rank training model layer matrix vector sample merge".split()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(60)) for _ in range(40)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(docs))
    return path


def lm_config(corpus, out_dir, method: dict, model: str = "hf:llama-tiny", **train) -> dict:
    return {
        "task": {"name": "lm", "model": model, "data": [str(corpus)], "vocab_size": 300, "seq_len": 16,
                 "batch_size": 2, "val_fraction": 0.1, "cache_dir": str(corpus.parent / "cache")},
        "method": method,
        "train": {"steps": 4, "progress": False, "lr": 3e-3, "schedule": "constant", "eval_every": 0,
                  "keep_best": False, "log_every": 1, **train},
        "out_dir": str(out_dir),
    }
