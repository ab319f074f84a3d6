import sys

import pytest
import torch

from sst.models.hf import build_hf_model, lm_logits
from sst.models.llama import build_llama


@pytest.fixture
def transformers():
    return pytest.importorskip("transformers")


@pytest.mark.parametrize("name", ["llama-tiny", "opt-tiny"])
def test_hf_models_run_through_lm_logits(transformers, name):
    torch.manual_seed(0)
    model = build_hf_model(name, vocab_size=101, max_seq_len=32)
    logits = lm_logits(model, torch.randint(0, 101, (2, 16)))
    assert logits.shape == (2, 16, 101)
    assert torch.isfinite(logits).all()


def test_hf_llama_has_our_shapes(transformers):
    hf = build_hf_model("llama-tiny", vocab_size=500)
    ours = build_llama("tiny", vocab_size=500)
    assert isinstance(hf, transformers.LlamaForCausalLM)
    assert sum(p.numel() for p in hf.parameters()) == sum(p.numel() for p in ours.parameters())
    with torch.device("meta"):
        big = build_hf_model("llama-130m", vocab_size=32000)
        ours_big = build_llama("llama-130m", vocab_size=32000)
    c = big.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (768, 12, 12, 2048)
    assert sum(p.numel() for p in big.parameters()) == sum(p.numel() for p in ours_big.parameters())


def test_our_llama_matches_hf_llama_with_the_same_weights(transformers):
    torch.manual_seed(0)
    ours = build_llama("tiny", vocab_size=200, max_seq_len=64).eval()
    hf = build_hf_model("llama-tiny", vocab_size=200, max_seq_len=64).eval()
    mapped = {("model." + k if not k.startswith("lm_head") else k): v for k, v in ours.state_dict().items()}
    missing, unexpected = hf.load_state_dict(mapped, strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    ids = torch.randint(0, 200, (2, 24))
    torch.testing.assert_close(lm_logits(hf, ids), lm_logits(ours, ids), rtol=1e-4, atol=1e-4)


def test_opt_125m_matches_the_public_parameter_count(transformers):
    with torch.device("meta"):
        model = build_hf_model("opt-125m", vocab_size=50272, max_seq_len=2048)
    assert isinstance(model, transformers.OPTForCausalLM)
    assert sum(p.numel() for p in model.parameters()) == 125_239_296


def test_overrides_and_unknown_names(transformers):
    model = build_hf_model("opt-tiny", vocab_size=64, hidden_size=32, num_attention_heads=2)
    assert model.config.hidden_size == 32 and model.config.word_embed_proj_dim == 32
    assert lm_logits(model, torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 64)
    model = build_hf_model("llama-tiny", vocab_size=64, hidden_size=32, num_attention_heads=2, intermediate_size=48)
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (32, 32)
    assert model.model.layers[0].mlp.up_proj.weight.shape == (48, 32)
    assert lm_logits(model, torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 64)
    with pytest.raises(ValueError, match="unknown Hugging Face model 'gpt-2'"):
        build_hf_model("gpt-2", vocab_size=64)


def test_missing_transformers_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"pip install 'sparse-spectral-training\[hf\]'"):
        build_hf_model("opt-tiny", vocab_size=64)


def test_lm_logits_passes_tensors_through():
    model = build_llama("tiny", vocab_size=20)
    ids = torch.randint(0, 20, (1, 6))
    assert torch.equal(lm_logits(model, ids), model(ids))
