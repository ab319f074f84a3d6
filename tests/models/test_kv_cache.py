"""Key/value cache plumbing: causal self-attention appends, cross-attention is computed once."""

import torch

from sst.models.kv_cache import (
    cached_keys_values,
    cached_length,
    causal_mask,
    cross_attention_key,
    reorder_cache,
    self_attention_key,
)


def kv(length: int, fill: float):
    return lambda: (torch.full((2, 1, length, 3), fill), torch.full((2, 1, length, 3), -fill))


def test_causal_mask_places_new_queries_after_the_cached_keys():
    assert torch.equal(causal_mask(3, 3), torch.ones(3, 3, dtype=torch.bool).tril())
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)  # 2 queries, 2 cached
    assert torch.equal(causal_mask(2, 4), expected)


def test_without_a_cache_keys_and_values_are_just_projected():
    k, v = cached_keys_values(None, "0.self", True, kv(2, 1.0))
    assert k.shape == (2, 1, 2, 3) and bool((v == -1).all())
    assert cached_length(None) == 0 and cached_length({}) == 0


def test_self_attention_appends_and_cross_attention_is_reused():
    cache: dict = {}
    self_key, cross_key = self_attention_key(0), cross_attention_key(0)
    cached_keys_values(cache, self_key, True, kv(2, 1.0))
    k, v = cached_keys_values(cache, self_key, True, kv(1, 2.0))
    assert k.shape[2] == 3 and k[0, 0, :, 0].tolist() == [1.0, 1.0, 2.0] and v[0, 0, -1, 0] == -2.0
    assert cached_length(cache) == 3

    cached_keys_values(cache, cross_key, False, kv(5, 3.0))

    def never():
        raise AssertionError("cross-attention keys must come from the cache")

    k, _ = cached_keys_values(cache, cross_key, False, never)
    assert k.shape[2] == 5 and sorted(cache) == ["0.cross.k", "0.cross.v", "0.self.k", "0.self.v"]


def test_reorder_cache_picks_batch_rows():
    cache = {"0.self.k": torch.arange(3.0)[:, None], "0.self.v": -torch.arange(3.0)[:, None]}
    out = reorder_cache(cache, torch.tensor([2, 2, 0]))
    assert out["0.self.k"][:, 0].tolist() == [2.0, 2.0, 0.0] and out["0.self.v"][:, 0].tolist() == [-2.0, -2.0, -0.0]
    assert cache["0.self.k"][:, 0].tolist() == [0.0, 1.0, 2.0]  # the input is not modified
