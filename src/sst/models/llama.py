"""A compact LLaMA-style decoder-only language model.

Each block: h = x + Attn(RMSNorm(x)); y = h + MLP(RMSNorm(h)), with causal multi-head attention on
rotary-embedded queries and keys (position m rotates each pair of channels by angle m * theta_i,
theta_i = rope_theta^(-2i/d_head)), MLP(x) = down(silu(gate(x)) * up(x)) and
RMSNorm(x) = x / sqrt(mean(x^2) + eps) * g. Every projection is a bias-free nn.Linear.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from sst.errors import ConfigError


@dataclass
class LlamaConfig:
    """Shapes and initialisation of a LLaMA-style model."""

    vocab_size: int = 8192
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 172
    max_seq_len: int = 1024
    tie_embeddings: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"LlamaConfig.{name}: must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ConfigError(
                f"LlamaConfig: d_model ({self.d_model}) must split into n_heads ({self.n_heads}) "
                "heads of even size (rotary embeddings rotate channel pairs)"
            )


# Shapes follow the GaLore/ReLoRA LLaMA family (vocabulary set per task).
LLAMA_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, d_ff=172),
    "llama-20m": dict(d_model=256, n_layers=4, n_heads=4, d_ff=688),
    "llama-60m": dict(d_model=512, n_layers=8, n_heads=8, d_ff=1376),
    "llama-130m": dict(d_model=768, n_layers=12, n_heads=12, d_ff=2048),
    "llama-350m": dict(d_model=1024, n_layers=24, n_heads=16, d_ff=2736),
    "llama-1b": dict(d_model=2048, n_layers=24, n_heads=32, d_ff=5461),
}


def llama_config(preset: str, vocab_size: int, **overrides) -> LlamaConfig:
    """The ``LlamaConfig`` of a preset name with ``overrides`` (field=value) applied."""
    if preset not in LLAMA_PRESETS:
        raise ConfigError(f"unknown LLaMA preset {preset!r}; choose one of {sorted(LLAMA_PRESETS)}")
    return replace(LlamaConfig(vocab_size=vocab_size, **LLAMA_PRESETS[preset]), **overrides)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension; any shape (..., d)."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32: the mean of squares loses precision in bf16.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return x32.type_as(x) * self.weight


def rotary_angles(
    inv_freq: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * frequency.

    inv_freq: (d_head/2,); positions: (T,). Returns cos, sin of shape (T, d_head), each frequency
    repeated for the two halves that ``apply_rotary`` pairs up.
    """
    angles = positions.float()[:, None] * inv_freq.float()[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + d_head/2) of x (B, H, T, d_head) by the angles in cos, sin
    (T, d_head).

    Then <rot(q, m), rot(k, n)> depends on m - n only: the relative-position property of RoPE.
    """
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).type_as(x)


class Attention(nn.Module):
    """Causal multi-head self-attention with rotary position embeddings."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d); cos, sin: (T, d_head). Returns (B, T, d)."""
        B, T, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, H, T, d_head)
            return t.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2)

        q = apply_rotary(heads(self.q_proj(x)), cos, sin)
        k = apply_rotary(heads(self.k_proj(x)), cos, sin)
        y = F.scaled_dot_product_attention(q, k, heads(self.v_proj(x)), is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)); (B, T, d) -> (B, T, d)."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then + mlp(norm(.))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab_size)."""

    recomputed_blocks = ("layers",)  # the block list activation checkpointing wraps (sst.models.recompute)

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # inv_freq is derived from the config, so it is neither trained nor saved.
        d_head = config.d_model // config.n_heads
        self.register_buffer("inv_freq", torch.empty(d_head // 2), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """(Re)initialise: every linear and embedding weight ~ N(0, init_std^2), norm gains 1.

        Also recomputes the rotary frequencies, so a model built on the ``meta`` device can be
        materialised with ``model.to_empty(device=...)`` followed by ``model.init_weights()``.
        """
        c = self.config
        d_head = c.d_model // c.n_heads
        with torch.no_grad():
            even = torch.arange(0, d_head, 2, dtype=torch.float32, device=self.inv_freq.device)
            self.inv_freq.copy_(c.rope_theta ** -(even / d_head))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=c.init_std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (B, T) long, T <= max_seq_len. Returns logits (B, T, vocab_size)."""
        T = input_ids.shape[1]
        if T > self.config.max_seq_len:
            raise ValueError(
                f"sequence length {T} exceeds the model's max_seq_len {self.config.max_seq_len}"
            )
        cos, sin = rotary_angles(self.inv_freq, torch.arange(T, device=input_ids.device))
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def build_llama(preset: str, vocab_size: int, **overrides) -> LlamaModel:
    """A freshly initialised ``LlamaModel`` of a preset (see ``LLAMA_PRESETS``) with overrides.

    Works under ``with torch.device("meta"):`` for allocation-free parameter counting.
    """
    return LlamaModel(llama_config(preset, vocab_size, **overrides))
