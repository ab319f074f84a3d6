"""Key/value cache of incremental encoder-decoder decoding, and the attention plumbing around it.

A cache is a dict of batch-first tensors (B, heads, L, ...) named ``"{layer}.self.k"``,
``"{layer}.self.v"``, ``"{layer}.cross.k"``, ``"{layer}.cross.v"``. Causal self-attention appends
each call's new positions: K_L = cat(K_cached, K_new) along dim 2; cross-attention projects the
memory once. The T new queries are the last T of L positions, so query i sees keys j <= L - T + i.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sst.errors import ConfigError

KVCache = dict[str, torch.Tensor]


def self_attention_key(layer: int) -> str:
    """Cache name prefix of decoder layer ``layer``'s self-attention."""
    return f"{layer}.self"


def cross_attention_key(layer: int) -> str:
    """Cache name prefix of decoder layer ``layer``'s cross-attention."""
    return f"{layer}.cross"


def cached_length(cache: KVCache | None) -> int:
    """How many target positions the cache already holds (0 for None or an empty cache)."""
    return cache[f"{self_attention_key(0)}.k"].shape[2] if cache else 0


def cached_keys_values(
    cache: KVCache | None,
    key: str,
    causal: bool,
    project: Callable[[], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values (B, heads, L, ...) of one attention call, read from and stored in ``cache``.

    ``project()`` computes them for this call's key/value inputs. Without a cache it is simply
    called; causal self-attention appends its result to the cached positions under ``key``;
    cross-attention (not causal) calls it once and reuses the stored tensors afterwards.
    """
    if cache is not None and not causal and f"{key}.k" in cache:
        return cache[f"{key}.k"], cache[f"{key}.v"]
    k, v = project()
    if cache is not None:
        if causal and f"{key}.k" in cache:
            k = torch.cat([cache[f"{key}.k"], k], dim=2)
            v = torch.cat([cache[f"{key}.v"], v], dim=2)
        cache[f"{key}.k"], cache[f"{key}.v"] = k, v
    return k, v


def causal_mask(n_queries: int, n_keys: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, L) bool, True where query i may attend key j: j <= L - T + i (queries are the last T)."""
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(n_keys - n_queries)


def reorder_cache(cache: KVCache, rows: torch.Tensor) -> KVCache:
    """A new cache whose batch row b is row ``rows[b]`` of ``cache``; rows (B',) long."""
    return {name: value[rows] for name, value in cache.items()}


class CachedAttention(nn.Module):
    """Multi-head attention with the cache above; self-attention when ``kv is x``, else cross-attention.

    The geometry lives in subclasses: they create ``q_proj``, ``k_proj``, ``v_proj`` (B, L, D) ->
    (B, L, D) and define ``_split`` (B, L, D) -> (B, H, L, D_head) and ``_attend(q, k, v, key_mask,
    causal)`` -> (B, T, D), with q (B, H, T, D_head) and k, v (B, H, L, D_head).
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads

    def forward(
        self,
        x: torch.Tensor,
        kv: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        key: str = "",
    ) -> torch.Tensor:
        """x (B, T, D) queries, kv (B, S, D) keys/values, key_mask (B, S) True at real tokens -> (B, T, D).

        With ``cache``, the per-head keys/values are stored under ``key``: causal self-attention
        appends the new positions to those of earlier calls; cross-attention computes them once.
        """
        q = self._split(self.q_proj(x))
        k, v = cached_keys_values(
            cache, key, causal, lambda: (self._split(self.k_proj(kv)), self._split(self.v_proj(kv)))
        )
        return self._attend(q, k, v, key_mask, causal)
