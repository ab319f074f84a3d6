"""HyboNet Transformer: a fully hyperbolic encoder-decoder in the Lorentz model (Chen et al. 2022).

Tokens: x = expmap0([0, E[tok] + P[pos]]) (positions added in the tangent space at the origin).
Attention per head h: a_ij = softmax_j(-d_L^2(q_i, k_j) / (tau_h sqrt(d_head))), out_i = centroid_j(a_ij, v_j)
with d_L^2(x, y) = -2K - 2<x, y>_L. Residual: add space parts of x and F(x), re-project. Logits:
output_proj(logmap0(y)) with a Euclidean ``nn.Linear``. Decoding reuses ``sst.models.translation``
and the key/value cache ``sst.models.kv_cache``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sst.hyperbolic import math as hm
from sst.hyperbolic.layers import LorentzLinear
from sst.models.kv_cache import (
    CachedAttention,
    KVCache,
    causal_mask,
    cross_attention_key,
    self_attention_key,
)
from sst.models.translation import Seq2Seq, TranslationConfig, sinusoidal_positions


@dataclass
class HyboNetTransformerConfig(TranslationConfig):
    """TranslationConfig plus the curvature parameter K (points satisfy <x, x>_L = -K).

    ``share_embeddings`` ties the source and target embedding tables; the output projection is
    always its own matrix (the tangent vectors logmap0(y) have norm d(o, y) of a few units, so
    logits through a tied d^-1/2-scaled table would stay too small to be confident).
    """

    K: float = 1.0


def _float32(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off: distances between points with x_0 ~ 10 cancel catastrophically in 16 bits."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _to_point(space: torch.Tensor, K: float) -> torch.Tensor:
    """Space coordinates (..., d) -> the hyperboloid point (sqrt(K + |s|^2), s) of shape (..., d+1)."""
    return hm.project(F.pad(space, (1, 0)), K)


def lorentz_residual(x: torch.Tensor, y: torch.Tensor, K: float) -> torch.Tensor:
    """Residual of two points (..., d+1): add the space parts, recompute the time coordinate.

    Choice: the Lorentz midpoint normalize(x + y) weighs points by their time coordinate, so the
    sublayer outputs (x_0 up to 11 sqrt K) drown the embeddings (x_0 ~ 2); on the synthetic corpus
    it reached validation loss 1.56 against 0.94 for this rule after the same 300 steps.
    """
    return _to_point(x[..., 1:].float() + y[..., 1:].float(), K)


class LorentzAttention(CachedAttention):
    """Multi-head Lorentz attention: softmax of negative squared distances, Lorentz centroid of values.

    q_proj/k_proj/v_proj/o_proj are LorentzLinear(d, d) (inner ``.linear`` of shape (d+1, d+1)).
    Heads split the d space coordinates of q, k, v into n_heads blocks of d_head; each block is
    re-projected onto its own d_head-dimensional hyperboloid. The head centroids' space blocks are
    concatenated and re-projected into one d-dimensional point before o_proj. A learnable
    log-temperature per head scales the scores; a constant score bias (as in HyboNet) would cancel
    in the softmax, so there is none.
    """

    def __init__(self, d_model: int, n_heads: int, K: float, dropout: float):
        super().__init__(d_model, n_heads)
        self.K = K
        self.q_proj = LorentzLinear(d_model, d_model, K)
        self.k_proj = LorentzLinear(d_model, d_model, K)
        self.v_proj = LorentzLinear(d_model, d_model, K)
        self.o_proj = LorentzLinear(d_model, d_model, K, dropout=dropout)
        self.log_temperature = nn.Parameter(torch.zeros(n_heads))
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d+1) points -> (B, H, L, d_head+1) per-head points."""
        B, L, _ = x.shape
        space = x[..., 1:].float().view(B, L, self.n_heads, self.d_head).transpose(1, 2)
        return _to_point(space, self.K)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        """Per-head points q (B, H, T, d_head+1), k and v (B, H, L, d_head+1), key_mask (B, L) or
        None -> (B, T, d+1) points."""
        B, _, T, _ = q.shape
        with _float32(q.device):
            # <q, k>_L = q_1: . k_1: - q_0 k_0, as one matmul with the time sign flipped on q
            q_signed = torch.cat([-q[..., :1], q[..., 1:]], dim=-1)
            sq_dist = (-2 * self.K - 2 * q_signed @ k.transpose(-1, -2)).clamp_min(0.0)
            temperature = self.log_temperature.float().exp()[:, None, None] * math.sqrt(self.d_head)
            scores = -sq_dist / temperature  # (B, H, T, S)
            S = k.shape[2]
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
            if causal:
                scores = scores.masked_fill(~causal_mask(T, S, q.device), float("-inf"))
            weights = self.dropout(torch.softmax(scores, dim=-1))
            heads = hm.centroid(v, weights, self.K)  # (B, H, T, d_head+1)
            merged = _to_point(heads[..., 1:].transpose(1, 2).reshape(B, T, -1), self.K)
        return self.o_proj(merged)


class LorentzFeedForward(nn.Module):
    """fc2(ReLU(fc1(x))) with LorentzLinear layers; ReLU acts on fc2's input point (HyboNet style)."""

    def __init__(self, d_model: int, d_ff: int, K: float, dropout: float):
        super().__init__()
        self.fc1 = LorentzLinear(d_model, d_ff, K)
        self.fc2 = LorentzLinear(d_ff, d_model, K, dropout=dropout, activation=nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., d+1) points -> (..., d+1) points."""
        return self.fc2(self.fc1(x))


class LorentzEncoderLayer(nn.Module):
    def __init__(self, cfg: HyboNetTransformerConfig):
        super().__init__()
        self.K = cfg.K
        self.self_attn = LorentzAttention(cfg.d_model, cfg.n_heads, cfg.K, cfg.dropout)
        self.ffn = LorentzFeedForward(cfg.d_model, cfg.d_ff, cfg.K, cfg.dropout)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """x (B, S, d+1) points, src_mask (B, S) -> (B, S, d+1) points."""
        hm.maybe_check_on_manifold(x, self.K, name="LorentzEncoderLayer input")
        x = lorentz_residual(x, self.self_attn(x, x, src_mask), self.K)
        return lorentz_residual(x, self.ffn(x), self.K)


class LorentzDecoderLayer(nn.Module):
    def __init__(self, cfg: HyboNetTransformerConfig, index: int = 0):
        super().__init__()
        self.K, self.index = cfg.K, index
        self.self_attn = LorentzAttention(cfg.d_model, cfg.n_heads, cfg.K, cfg.dropout)
        self.cross_attn = LorentzAttention(cfg.d_model, cfg.n_heads, cfg.K, cfg.dropout)
        self.ffn = LorentzFeedForward(cfg.d_model, cfg.d_ff, cfg.K, cfg.dropout)

    def forward(
        self,
        y: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """y (B, T, d+1), memory (B, S, d+1), src_mask (B, S) -> (B, T, d+1) points.

        Target padding follows every real token, so the causal mask keeps real positions from it.
        """
        hm.maybe_check_on_manifold(y, self.K, name="LorentzDecoderLayer input")
        own = self.self_attn(y, y, causal=True, cache=cache, key=self_attention_key(self.index))
        y = lorentz_residual(y, own, self.K)
        cross = self.cross_attn(y, memory, src_mask, cache=cache, key=cross_attention_key(self.index))
        y = lorentz_residual(y, cross, self.K)
        return lorentz_residual(y, self.ffn(y), self.K)


class HyboNetTransformer(Seq2Seq):
    """Lorentz encoder-decoder: ``forward(src (B, S), tgt_in (B, T)) -> logits (B, T, V)``.

    Hidden states are points (..., d_model + 1) on the hyperboloid of curvature -1/K. The only
    projections are the inner ``nn.Linear`` of LorentzLinear layers (``*.q_proj.linear``, ...,
    ``*.fc1.linear``, ``*.fc2.linear``), which methods replace by surgery, and the Euclidean
    ``output_proj`` (V, d), excluded from surgery by default like an LM head.
    """

    def __init__(self, cfg: HyboNetTransformerConfig):
        super().__init__()
        hm.check_curvature(cfg.K)
        self._init_token_embeddings(cfg)
        # unit-norm tangent positions (sinusoid rows have norm sqrt(d/2)): points stay within a few
        # units of the origin, where float32 distances are accurate
        positions = sinusoidal_positions(cfg.max_len, cfg.d_model) / math.sqrt(cfg.d_model / 2)
        self.register_buffer("positions", positions, persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(LorentzEncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.decoder = nn.ModuleList(LorentzDecoderLayer(cfg, i) for i in range(cfg.n_layers))
        self.output_proj = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.output_proj.weight)
        for embed in {self.src_embed, self.tgt_embed}:
            # std d^-1/2: token tangent vectors of norm about 1, like the positions
            nn.init.normal_(embed.weight, std=self.config.d_model**-0.5)
            with torch.no_grad():
                embed.weight[self.config.pad_id].zero_()

    def _embed(self, embed: nn.Embedding, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """tokens (B, L) at positions offset..offset+L-1 -> points (B, L, d+1) = expmap0([0, E + P])."""
        tangent = self.dropout(embed(tokens).float() + self._positions_at(offset, tokens.shape[1]))
        return hm.expmap0(F.pad(tangent, (1, 0)), self.config.K)

    def _encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        return x  # memory points stay on the hyperboloid: (B, S, d+1)

    def _logits(self, y: torch.Tensor) -> torch.Tensor:
        with _float32(y.device):
            tangent = hm.logmap0(y.float(), self.config.K)[..., 1:]
        return self.output_proj(tangent)
