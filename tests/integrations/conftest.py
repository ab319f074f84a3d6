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
