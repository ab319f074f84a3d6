"""sst.shards without sharding: every helper is the identity on plain tensors (the FSDP2 side is
exercised by tests/train/test_fsdp.py with two processes)."""

import torch
from torch import nn

from sst.shards import any_sharded, full, gathered, is_sharded, local, one_at_a_time, write_


def test_plain_tensors_pass_through():
    t = torch.arange(6.0).reshape(2, 3)
    assert not is_sharded(t) and full(t) is t and local(t) is t
    write_(t, torch.ones(2, 3))
    assert torch.equal(t, torch.ones(2, 3))


def test_unsharded_modules_are_batched_together_and_gathered_in_place():
    layers = [nn.Linear(3, 2) for _ in range(3)]
    assert not any_sharded(layers)
    assert one_at_a_time(layers) == [layers] and one_at_a_time([]) == []
    weight = layers[0].weight
    with gathered(*layers), torch.no_grad():
        assert layers[0].weight is weight  # nothing swapped
        layers[0].weight.mul_(0)
    assert layers[0].weight is weight and not weight.any()
