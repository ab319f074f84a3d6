"""Pre-norm encoder-decoder Transformer for machine translation, with greedy and beam decoding.

Each sub-layer is x + Dropout(F(LayerNorm(x))); attention is softmax(Q K^T / sqrt(d_head) + mask) V
with a padding mask on the source and a causal mask on the target. Tokens are embedded as
sqrt(d) * E[token] + sinusoidal position; the output projection can share E. The decoding
functions only need a model with ``encode``/``decode``, so other geometries can reuse them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from sst.models.kv_cache import (
    CachedAttention,
    KVCache,
    cached_length,
    causal_mask,
    cross_attention_key,
    reorder_cache,
    self_attention_key,
)


@dataclass
class TranslationConfig:
    """Shape of the encoder-decoder; ``n_layers`` counts encoder and decoder layers each."""

    vocab_size: int = 8000
    d_model: int = 128
    n_layers: int = 3
    n_heads: int = 4
    d_ff: int = 512
    dropout: float = 0.1
    max_len: int = 128
    share_embeddings: bool = True
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, d_model) table: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)."""
    position = torch.arange(max_len, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: d_model // 2])
    return table.float()


class Attention(CachedAttention):
    """Multi-head softmax(Q K^T / sqrt(d_head) + mask) V over d-dimensional vectors."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__(d_model, n_heads)
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d) -> (B, h, L, d / h) per-head vectors."""
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, self.d_head).transpose(1, 2)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        """q (B, h, T, d/h), k and v (B, h, L, d/h), key_mask (B, L) or None -> (B, T, d)."""
        B, _, T, _ = q.shape
        mask = None if key_mask is None else key_mask[:, None, None, :]
        if causal and k.shape[2] > T:  # cached earlier positions: the square causal mask no longer fits
            mask = causal_mask(T, k.shape[2], q.device)
            causal = False
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=causal
        )
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """Position-wise fc2(Dropout(ReLU(fc1(x))))."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., d) -> (..., d)."""
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: TranslationConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.self_attn = Attention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """x (B, S, d), src_mask (B, S) -> (B, S, d)."""
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, src_mask))
        return x + self.dropout(self.ffn(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TranslationConfig, index: int = 0):
        super().__init__()
        self.index = index
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.self_attn = Attention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.cross_attn = Attention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.norm3 = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        y: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """y (B, T, d), memory (B, S, d), src_mask (B, S) -> (B, T, d); ``cache`` as in ``decode``.

        Target padding sits after every real token, so the causal mask alone keeps real positions
        from seeing it; outputs at padded positions are ignored by the loss.
        """
        h = self.norm1(y)
        own = self.self_attn(h, h, causal=True, cache=cache, key=self_attention_key(self.index))
        y = y + self.dropout(own)
        h = self.norm2(y)
        cross = self.cross_attn(h, memory, src_mask, cache=cache, key=cross_attention_key(self.index))
        y = y + self.dropout(cross)
        return y + self.dropout(self.ffn(self.norm3(y)))


class Seq2Seq(nn.Module):
    """The encoder-decoder skeleton shared by the Euclidean and the Lorentz Transformer.

    Subclasses call ``_init_token_embeddings`` and provide a ``positions`` buffer (max_len, d),
    ``_embed(embedding, tokens, offset)``, the ``encoder``/``decoder`` layer lists,
    ``_encoder_output`` (final normalisation of the memory) and ``_logits``.
    """

    recomputed_blocks = ("encoder", "decoder")  # the block lists activation checkpointing wraps

    def _init_token_embeddings(self, cfg: TranslationConfig) -> None:
        """Set ``config`` and the (V, d) tables ``src_embed``, ``tgt_embed`` (one table when shared)."""
        self.config = cfg
        self.src_embed = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.tgt_embed = (
            self.src_embed
            if cfg.share_embeddings
            else nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        )

    def _positions_at(self, offset: int, length: int) -> torch.Tensor:
        """Rows offset..offset+length-1 of ``positions``: (length, d); ValueError past max_len."""
        end = offset + length
        if end > self.positions.shape[0]:
            raise ValueError(f"sequence length {end} exceeds the model's max_len={self.positions.shape[0]}")
        return self.positions[offset:end]

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) token ids -> memory (B, S, D) and src_mask (B, S) bool, True at real tokens."""
        src_mask = src != self.config.pad_id
        x = self._embed(self.src_embed, src)
        for layer in self.encoder:
            x = layer(x, src_mask)
        return self._encoder_output(x), src_mask

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """tgt_in (B, T), memory (B, S, D), src_mask (B, S) -> logits (B, T, V).

        Incremental decoding: pass the same ``cache`` dict (initially empty) on every call with only
        the new target tokens; it fills with per-layer keys/values (B, heads, L, ...), batch first.
        """
        y = self._embed(self.tgt_embed, tgt_in, cached_length(cache))
        for layer in self.decoder:
            y = layer(y, memory, src_mask, cache)
        return self._logits(y)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """src (B, S), tgt_in (B, T) (starting with bos) -> logits (B, T, V) for the next tokens."""
        memory, src_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_mask)

    def greedy_decode(self, src: torch.Tensor, max_len: int) -> list[list[int]]:
        return greedy_decode(self, src, max_len)

    def beam_search(
        self, src: torch.Tensor, beam_size: int = 4, max_len: int = 128, length_penalty: float = 1.0
    ) -> list[list[int]]:
        return beam_search(self, src, beam_size, max_len, length_penalty)


class TranslationTransformer(Seq2Seq):
    """Encoder-decoder Transformer: ``forward(src (B, S), tgt_in (B, T)) -> logits (B, T, V)``."""

    def __init__(self, cfg: TranslationConfig):
        super().__init__()
        self._init_token_embeddings(cfg)
        self.register_buffer("positions", sinusoidal_positions(cfg.max_len, cfg.d_model), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.encoder_norm = nn.LayerNorm(cfg.d_model)
        self.decoder = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.n_layers))
        self.decoder_norm = nn.LayerNorm(cfg.d_model)
        self.output_proj = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for embed in {self.src_embed, self.tgt_embed}:
            # std d^-1/2 with the sqrt(d) input scale gives unit-variance inputs and, when tied,
            # output logits of order one.
            nn.init.normal_(embed.weight, std=self.config.d_model**-0.5)
            with torch.no_grad():
                embed.weight[self.config.pad_id].zero_()
        if self.config.share_embeddings:
            self.output_proj.weight = self.tgt_embed.weight

    def _embed(self, embed: nn.Embedding, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """tokens (B, L) at positions offset..offset+L-1 -> (B, L, d)."""
        x = embed(tokens) * math.sqrt(self.config.d_model) + self._positions_at(offset, tokens.shape[1])
        return self.dropout(x)

    def _encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder_norm(x)

    def _logits(self, y: torch.Tensor) -> torch.Tensor:
        return self.output_proj(self.decoder_norm(y))


# --------------------------------------------------------------------------------------------
# Objective and decoding, generic over any encoder-decoder exposing encode/decode


class EncoderDecoder(Protocol):
    config: TranslationConfig

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) for ``tgt_in`` (B, T); with a ``cache`` dict (any tensors, batch first,
        that decoding may reorder along dim 0), ``tgt_in`` holds only the tokens after the cached ones."""


def label_smoothed_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, pad_id: int, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean over non-pad targets of (1 - eps) * NLL + eps * mean_v(-log p_v).

    logits (B, T, V), target (B, T) -> scalar. Computed in float32 even under bf16 autocast.
    """
    return F.cross_entropy(
        logits.float().flatten(0, 1),
        target.flatten(),
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )


def _strip(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens


@torch.no_grad()
def greedy_decode(model: EncoderDecoder, src: torch.Tensor, max_len: int) -> list[list[int]]:
    """src (B, S) -> B lists of generated ids (no bos/eos), at most ``max_len`` tokens each.

    Batched, with incremental decoding through the model's cache; finished rows emit pad.
    """
    cfg = model.config
    memory, src_mask = model.encode(src)
    cache: KVCache = {}
    token = torch.full((src.shape[0], 1), cfg.bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    generated = []
    for _ in range(max_len):
        token = model.decode(token, memory, src_mask, cache)[:, -1].argmax(-1, keepdim=True)
        token = token.masked_fill(done[:, None], cfg.pad_id)
        generated.append(token)
        done |= token[:, 0] == cfg.eos_id
        if bool(done.all()):
            break
    rows = torch.cat(generated, dim=1).tolist() if generated else [[] for _ in range(src.shape[0])]
    return [_strip(row, cfg.eos_id) for row in rows]


@torch.no_grad()
def beam_search(
    model: EncoderDecoder, src: torch.Tensor, beam_size: int, max_len: int, length_penalty: float = 1.0
) -> list[list[int]]:
    """src (B, S) -> B lists of ids (no bos/eos): the best hypothesis by sum log p / length^alpha.

    One sentence at a time with ``beam_size`` hypotheses; a hypothesis ending in eos among the top
    ``beam_size`` candidates is finished, and the search stops once ``beam_size`` are finished
    (or after ``max_len`` tokens, when the live hypotheses compete too). alpha = length_penalty;
    the length counts the eos.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    cfg = model.config
    memory, src_mask = model.encode(src)
    results = []
    for b in range(src.shape[0]):
        mem, mask = memory[b : b + 1], src_mask[b : b + 1]
        cache: KVCache = {}
        hyps = torch.empty(1, 0, dtype=torch.long, device=src.device)  # (k, step - 1) tokens so far
        last = torch.full((1, 1), cfg.bos_id, dtype=torch.long, device=src.device)
        scores = torch.zeros(1, device=src.device)
        finished: list[tuple[float, list[int]]] = []
        for step in range(1, max_len + 1):
            k = hyps.shape[0]
            logits = model.decode(last, mem.expand(k, -1, -1), mask.expand(k, -1), cache)[:, -1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            vocab = logp.shape[-1]
            top_scores, top_idx = (scores[:, None] + logp).flatten().topk(min(2 * beam_size, k * vocab))
            keep_rows, keep_tokens, keep_scores = [], [], []
            for rank, (score, idx) in enumerate(zip(top_scores.tolist(), top_idx.tolist())):
                row, token = divmod(idx, vocab)
                if token == cfg.eos_id:
                    if rank < beam_size:
                        finished.append((score / step**length_penalty, hyps[row].tolist()))
                elif len(keep_rows) < beam_size:
                    keep_rows.append(row)
                    keep_tokens.append(token)
                    keep_scores.append(score)
            if len(finished) >= beam_size or not keep_rows:
                break
            rows = torch.tensor(keep_rows, device=src.device)
            last = torch.tensor(keep_tokens, device=src.device)[:, None]
            hyps = torch.cat([hyps[rows], last], dim=1)
            scores = torch.tensor(keep_scores, device=src.device)
            cache = reorder_cache(cache, rows)
        else:
            finished += [(s / max_len**length_penalty, h) for s, h in zip(scores.tolist(), hyps.tolist())]
        results.append(max(finished, key=lambda item: item[0])[1])
    return results
