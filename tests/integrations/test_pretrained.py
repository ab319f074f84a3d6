"""PEFT-style lifecycle: save -> load gives the same model and method; counts; merge and unload."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sst
from sst.errors import CheckpointError, UsageError
from sst.integrations.pretrained import (
    from_pretrained, merge_and_unload, parameter_counts, print_trainable_parameters, save_pretrained,
)
from sst.models.hf import lm_logits
from sst.models.llama import build_llama


def hf_llama(vocab=97):
    pytest.importorskip("transformers")
    from sst.models.hf import build_hf_model

    return build_hf_model("llama-tiny", vocab, 32)


def trained_a_little(model, method, steps=3):
    """A few SST steps, so the factors and the sampler state differ from a fresh conversion."""
    optimizer = method.build_optimizer(model, lr=1e-2)
    for step in range(1, steps + 1):
        ids = torch.randint(0, 97, (2, 12))
        nn.functional.cross_entropy(lm_logits(model, ids).flatten(0, 1), ids.flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()
        method.after_step(model, optimizer, step)
    return model.eval()


@pytest.mark.parametrize("build", [hf_llama, lambda: build_llama("tiny", 97, max_seq_len=32)],
                         ids=["hf-llama", "our-llama"])
@pytest.mark.parametrize("config", [sst.SSTConfig(rank=4, resample_every=2), sst.LoRAConfig(rank=4)],
                         ids=["sst", "lora"])
def test_save_load_round_trip_gives_equal_logits_and_method_state(tmp_path, build, config):
    model, method = sst.convert(build(), config)
    trained_a_little(model, method)
    save_pretrained(model, method, tmp_path / "saved")
    loaded, loaded_method = from_pretrained(tmp_path / "saved")
    assert type(loaded) is type(model) and loaded_method.config == method.config
    ids = torch.randint(0, 97, (2, 12))
    torch.testing.assert_close(lm_logits(loaded.eval(), ids), lm_logits(model, ids), rtol=0, atol=0)
    assert torch.equal(loaded_method.generator.get_state(), method.generator.get_state())
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_models_own_save_pretrained_loads_with_the_method_it_records(tmp_path):
    model, method = sst.convert(hf_llama(), sst.SSTConfig(rank=3, resample_every=2))
    trained_a_little(model, method)
    model.save_pretrained(str(tmp_path / "native"))  # transformers' own: config.json names the method
    from sst.errors import RunWarning

    with pytest.warns(RunWarning, match=r"sampler\) starts afresh"):
        loaded, loaded_method = from_pretrained(tmp_path / "native")
    assert loaded_method.config == method.config
    ids = torch.randint(0, 97, (2, 12))
    torch.testing.assert_close(lm_logits(loaded.eval(), ids), lm_logits(model, ids), rtol=0, atol=0)


def test_from_pretrained_takes_a_base_model_and_names_what_is_missing(tmp_path, tiny_mlp):
    model, method = sst.convert(tiny_mlp, sst.SSTConfig(rank=3))
    save_pretrained(model, method, tmp_path / "mlp")
    with pytest.raises(UsageError, match="pass the base model"):
        from_pretrained(tmp_path / "mlp")
    loaded, _ = from_pretrained(tmp_path / "mlp", model=type(tiny_mlp)())
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(loaded(x), model(x))
    (tmp_path / "mlp" / "sst_method.json").unlink()
    with pytest.raises(CheckpointError, match="sst_method.json: missing .and no sst_method in a config.json"):
        from_pretrained(tmp_path / "mlp", model=type(tiny_mlp)())


def test_all_params_is_the_merged_model_for_every_method(capsys):
    dense = sum(p.numel() for p in build_llama("tiny", 97).parameters())
    counts = {}
    for config in (sst.FullConfig(), sst.LoRAConfig(rank=4), sst.SSTConfig(rank=4), sst.GaLoreConfig(rank=4)):
        torch.manual_seed(0)
        model, _ = sst.convert(build_llama("tiny", 97), config)
        counts[config.name] = parameter_counts(model)
        assert counts[config.name][1] == dense, config.name
    assert counts["full"][0] == dense and counts["galore"][0] == dense
    assert counts["sst"][0] < dense and counts["lora"][0] < dense
    line = print_trainable_parameters(model)
    assert capsys.readouterr().out.strip() == line
    assert line.startswith(f"trainable params: {dense:,d} || all params: {dense:,d} || trainable%: 100.0000")


def test_merge_and_unload_gives_a_plain_model_with_the_same_function():
    model, method = sst.convert(hf_llama(), sst.SSTConfig(rank=4))
    trained_a_little(model, method, steps=1)
    ids = torch.randint(0, 97, (1, 10))
    before = lm_logits(model, ids)
    plain = merge_and_unload(model)
    assert all(type(m) is nn.Linear for n, m in plain.named_modules() if n.endswith("_proj"))
    torch.testing.assert_close(lm_logits(plain, ids), before, rtol=1e-4, atol=1e-5)
