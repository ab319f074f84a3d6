"""Greedy and top-k generation on a model with known logits, and on a trained LM run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sst.inference.generate import generate_ids, generate_text, next_token
from sst.inference.loading import load_run


class Cycle(nn.Module):
    """Logits (B, T, 5) that always favour token (last + 1) mod 5, then (last + 2) mod 5."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.seen: list[int] = []

    def forward(self, ids):
        self.seen.append(ids.shape[1])
        logits = torch.full((*ids.shape, 5), -10.0)
        nxt = (ids + 1) % 5
        logits.scatter_(-1, nxt.unsqueeze(-1), 3.0)
        logits.scatter_(-1, ((ids + 2) % 5).unsqueeze(-1), 2.0)
        return logits


def test_greedy_follows_the_argmax_and_stops_at_the_stop_id():
    model = Cycle()
    assert generate_ids(model, [0], max_new_tokens=4) == [1, 2, 3, 4]
    assert generate_ids(model, [0], max_new_tokens=10, stop_id=3) == [1, 2, 3]
    assert generate_ids(model, [4], max_new_tokens=2, temperature=0.0, top_k=0) == [0, 1]


def test_context_is_cropped_to_the_model_length():
    model = Cycle()
    generate_ids(model, [0, 1, 2], max_new_tokens=4, max_context=4)
    assert model.seen == [3, 4, 4, 4]


def test_top_k_sampling_is_seeded_and_stays_in_the_top_k():
    model = Cycle()
    a = generate_ids(model, [0], max_new_tokens=30, top_k=2, seed=1)
    b = generate_ids(model, [0], max_new_tokens=30, top_k=2, seed=1)
    assert a == b
    prev = [0] + a[:-1]
    steps = [(t - p) % 5 for p, t in zip(prev, a)]
    assert set(steps) == {1, 2}  # both of the two best tokens occur, nothing else
    logits = torch.tensor([0.0, 5.0, 1.0])
    assert next_token(logits, top_k=1) == 1
    with pytest.raises(ValueError):
        next_token(logits, top_k=-1)


def test_generate_text_from_a_trained_run(sst_run):
    run = load_run(sst_run)
    text = generate_text(run, "the spectral", max_new_tokens=5)
    assert text == generate_text(run, "the spectral", max_new_tokens=5)
    assert isinstance(text, str) and len(text) > 0
    ids = run.task.data.tokenizer.encode("the spectral").ids
    new = generate_ids(run.model, ids, max_new_tokens=3)
    manual = list(ids)
    with torch.no_grad():
        for _ in range(3):
            manual.append(int(run.model(torch.tensor([manual]))[0, -1].argmax()))
    assert new == manual[len(ids):]
