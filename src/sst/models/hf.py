"""Hugging Face ``LlamaForCausalLM`` / ``OPTForCausalLM`` built from a config (never downloaded).

Lets the paper's OPT and LLaMA experiments run on the reference implementations. ``transformers``
is optional and imported only when such a model is built. ``lm_logits`` gives every causal LM the
same call: token ids (B, T) -> logits (B, T, V). ``hf_llama_from_ours`` maps our plain LLaMA onto
``LlamaForCausalLM`` (same names under ``model.``, same rotary halves convention: equal logits).
"""

from __future__ import annotations

import torch
from torch import nn

from sst.errors import ConfigError, require_package

from sst.models.llama import LLAMA_PRESETS, LlamaModel

# OPT shapes of the public checkpoints (opt-350m projects 1024 <-> 512 at the embeddings and
# normalises after each sub-layer, like the released model); "opt-tiny" is for tests.
OPT_PRESETS: dict[str, dict] = {
    "opt-tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=256),
    "opt-125m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072),
    "opt-350m": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096,
        word_embed_proj_dim=512, do_layer_norm_before=False,
    ),
}

HF_MODELS = tuple(f"llama-{p}" if p == "tiny" else p for p in LLAMA_PRESETS) + tuple(OPT_PRESETS)


def _transformers():
    return require_package("transformers", message="task.model: Hugging Face models need the "
                           "`transformers` package: pip install 'sparse-spectral-training[hf]'")


def build_hf_model(
    name: str, vocab_size: int, max_seq_len: int = 1024, init_std: float = 0.02, **overrides
) -> nn.Module:
    """A randomly initialised HF causal LM by preset name (no key/value cache: training use).

    name: ``llama-tiny`` or any ``LLAMA_PRESETS`` name (``llama-130m``; ``tiny`` also accepted)
    for ``LlamaForCausalLM``, or an ``OPT_PRESETS`` name (``opt-125m``) for ``OPTForCausalLM``.
    ``overrides`` are HF config fields (e.g. ``hidden_size``). Runs offline: only configs are built.
    """
    tf = _transformers()
    llama_name = "tiny" if name == "llama-tiny" else name
    if llama_name in LLAMA_PRESETS:
        p = LLAMA_PRESETS[llama_name]
        fields = dict(
            vocab_size=vocab_size, hidden_size=p["d_model"], num_hidden_layers=p["n_layers"],
            num_attention_heads=p["n_heads"], intermediate_size=p["d_ff"],
            max_position_embeddings=max_seq_len, initializer_range=init_std, rms_norm_eps=1e-6,
            tie_word_embeddings=False, use_cache=False,
        )
        fields.update(overrides)
        fields.setdefault("num_key_value_heads", fields["num_attention_heads"])  # plain multi-head
        return tf.LlamaForCausalLM(tf.LlamaConfig(**fields))
    if name in OPT_PRESETS:
        fields = dict(
            vocab_size=vocab_size, max_position_embeddings=max_seq_len, init_std=init_std,
            dropout=0.0, attention_dropout=0.0, pad_token_id=None, use_cache=False,
            **OPT_PRESETS[name],
        )
        fields.update(overrides)
        fields.setdefault("word_embed_proj_dim", fields["hidden_size"])
        return tf.OPTForCausalLM(tf.OPTConfig(**fields))
    raise ConfigError(f"unknown Hugging Face model {name!r}; choose one of {sorted(HF_MODELS)}")


def hf_llama_from_ours(model: LlamaModel) -> nn.Module:
    """A ``LlamaForCausalLM`` holding the weights of our ``LlamaModel`` (plain nn.Linear layers:
    merge first); its logits equal ours on any token ids (B, T), T <= max_seq_len."""
    tf = _transformers()
    c = model.config
    hf = tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.n_heads, intermediate_size=c.d_ff,
        max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps, rope_theta=c.rope_theta,
        initializer_range=c.init_std, tie_word_embeddings=c.tie_embeddings, attention_bias=False,
        mlp_bias=False, hidden_act="silu",
    ))
    weights = {(k if k.startswith("lm_head.") else "model." + k): v for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    missing = [k for k in missing if "rotary" not in k and not (c.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ConfigError(f"our LLaMA does not map onto LlamaForCausalLM (merge its layers first): "
                          f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return hf.to(next(model.parameters()).dtype).eval()


def lm_logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Next-token logits (B, T, V) of ``model`` on ``input_ids`` (B, T).

    Our models return the tensor; HF models return an output object with ``.logits``.
    """
    out = model(input_ids)
    return out if isinstance(out, torch.Tensor) else out.logits
