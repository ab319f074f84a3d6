import pytest
import torch
from torch import nn

from sst.models.llama import (
    LLAMA_PRESETS,
    LlamaConfig,
    LlamaModel,
    apply_rotary,
    build_llama,
    rotary_angles,
)


def n_params_formula(preset: str, vocab: int, tied: bool = False) -> int:
    p = LLAMA_PRESETS[preset]
    d, f, L = p["d_model"], p["d_ff"], p["n_layers"]
    per_layer = 4 * d * d + 3 * d * f + 2 * d  # q,k,v,o + gate,up,down + two RMSNorm gains
    return (1 if tied else 2) * vocab * d + L * per_layer + d


def test_output_shape_and_dtype():
    torch.manual_seed(0)
    model = build_llama("tiny", vocab_size=97)
    logits = model(torch.randint(0, 97, (3, 11)))
    assert logits.shape == (3, 11, 97)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_causal_masking():
    torch.manual_seed(0)
    model = build_llama("tiny", vocab_size=50).eval()
    ids = torch.randint(0, 50, (2, 12))
    changed = ids.clone()
    changed[:, 7] = (ids[:, 7] + 1) % 50
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
    assert (a[:, 7:] - b[:, 7:]).abs().amax() > 1e-3


def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    d_head = 16
    inv_freq = 10000.0 ** -(torch.arange(0, d_head, 2).float() / d_head)
    cos, sin = rotary_angles(inv_freq, torch.arange(64))
    q, k = torch.randn(d_head), torch.randn(d_head)

    def rot(x: torch.Tensor, pos: int) -> torch.Tensor:
        return apply_rotary(x.view(1, 1, 1, -1), cos[pos : pos + 1], sin[pos : pos + 1]).view(-1)

    for m, n, shift in [(3, 1, 5), (10, 10, 20), (0, 7, 33)]:
        base = rot(q, m) @ rot(k, n)
        shifted = rot(q, m + shift) @ rot(k, n + shift)
        torch.testing.assert_close(base, shifted, rtol=1e-4, atol=1e-4)
    # ... and they do depend on the relative position, and rotations keep norms.
    assert (rot(q, 5) @ rot(k, 2) - rot(q, 5) @ rot(k, 3)).abs() > 1e-3
    torch.testing.assert_close(rot(q, 9).norm(), q.norm())
    torch.testing.assert_close(rot(q, 0), q)


@pytest.mark.parametrize("preset", ["llama-130m", "llama-1b"])
def test_meta_device_parameter_count(preset):
    with torch.device("meta"):
        model = build_llama(preset, vocab_size=32000)
    params = list(model.parameters())
    assert all(p.device.type == "meta" for p in params)
    assert sum(p.numel() for p in params) == n_params_formula(preset, 32000)


def test_llama_130m_size_and_tied_count():
    assert n_params_formula("llama-130m", 32000) == 134_105_856
    with torch.device("meta"):
        tied = build_llama("llama-130m", vocab_size=32000, tie_embeddings=True)
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert sum(p.numel() for p in tied.parameters()) == n_params_formula("llama-130m", 32000, tied=True)


def test_meta_model_materialises_like_a_fresh_one():
    fresh = build_llama("tiny", vocab_size=40)
    torch.manual_seed(0)
    fresh.init_weights()  # construction also draws (nn.Linear's own init): compare from one seed
    with torch.device("meta"):
        model = build_llama("tiny", vocab_size=40)
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    model.init_weights()
    torch.testing.assert_close(model.inv_freq, fresh.inv_freq)
    ids = torch.randint(0, 40, (2, 9))
    torch.testing.assert_close(model(ids), fresh(ids))


def test_initialisation_is_normal_with_init_std():
    torch.manual_seed(0)
    model = build_llama("llama-20m", vocab_size=1000, n_layers=1, init_std=0.02)
    for w in (model.layers[0].self_attn.q_proj.weight, model.layers[0].mlp.down_proj.weight, model.embed_tokens.weight):
        assert abs(w.std().item() - 0.02) < 0.001
        assert abs(w.mean().item()) < 0.001
    assert torch.equal(model.layers[0].input_layernorm.weight, torch.ones(256))


def test_every_projection_is_a_bias_free_linear():
    model = build_llama("tiny", vocab_size=30)
    names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"}
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Linear))
    assert model.layers[1].mlp.gate_proj.weight.shape == (172, 64)
    assert model.lm_head.weight is not model.embed_tokens.weight  # untied by default


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = build_llama("tiny", vocab_size=30)
    model(torch.randint(0, 30, (2, 5))).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="unknown LLaMA preset"):
        build_llama("llama-7b", vocab_size=10)
    with pytest.raises(ValueError, match="n_heads"):
        LlamaConfig(d_model=64, n_heads=5)
    with pytest.raises(ValueError, match="d_ff"):
        LlamaConfig(d_ff=0)
    model = LlamaModel(LlamaConfig(vocab_size=10, max_seq_len=8))
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
