import pytest
import torch
from torch import nn

import sst
from sst.methods.surgery import find_targets, matches


def test_pattern_matching_rules():
    assert matches("layers.0.attn.q_proj", "q_proj")
    assert matches("layers.0.attn.q_proj", "layers.*.attn.q_proj")
    assert not matches("layers.0.attn.q_proj2", "q_proj")


def test_all_linear_excludes_output_head(tiny_mlp):
    assert list(find_targets(tiny_mlp, ["all-linear"])) == ["up", "mid"]


@pytest.mark.parametrize(
    "config",
    [sst.SSTConfig(rank=4), sst.LoRAConfig(rank=4), sst.ReLoRAConfig(rank=4)],
    ids=["sst", "lora", "relora"],
)
def test_conversion_keeps_the_function(tiny_mlp, config):
    x = torch.randn(5, 12, dtype=torch.float64)
    before = tiny_mlp(x).detach()
    model, _ = sst.convert(tiny_mlp, config)
    torch.testing.assert_close(model(x), before, rtol=1e-10, atol=1e-10)
    assert isinstance(model.lm_head, nn.Linear)


def test_rank_larger_than_layer_names_the_layer(tiny_mlp):
    with pytest.raises(sst.TargetError, match=r"rank 13 .*'up'.*min = 12"):
        sst.convert(tiny_mlp, sst.SSTConfig(rank=13))
    assert type(tiny_mlp.up) is nn.Linear and type(tiny_mlp.mid) is nn.Linear  # nothing half-converted


def test_pattern_that_matches_nothing(tiny_mlp):
    with pytest.raises(sst.TargetError, match=r"\['q_proj'\] match no module"):
        sst.convert(tiny_mlp, sst.SSTConfig(rank=2, target_modules=["mid", "q_proj"]))
    assert type(tiny_mlp.mid) is nn.Linear


def test_pattern_that_matches_a_non_linear_module():
    model = nn.Sequential()
    model.add_module("block", nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    with pytest.raises(sst.TargetError, match="'block' of type Sequential, which is not an nn.Linear"):
        sst.convert(model, sst.SSTConfig(rank=2, target_modules=["block"]))


def test_bad_config_values_name_the_field():
    with pytest.raises(sst.ConfigError, match="method.rank"):
        sst.SSTConfig(rank=0)
    with pytest.raises(sst.ConfigError, match="method.resample_every"):
        sst.SSTConfig(rank=2, resample_every=0)
    with pytest.raises(TypeError, match="SSTConfig"):
        sst.build_method({"name": "sst"})


@pytest.mark.parametrize("name", ["llama-tiny", "opt-tiny"])
def test_convert_hugging_face_models_built_from_config(name):
    pytest.importorskip("transformers")
    from sst.models.hf import build_hf_model, lm_logits

    model = build_hf_model(name, vocab_size=300, max_seq_len=32).float()
    model.eval()
    ids = torch.randint(0, 300, (2, 16))
    before = lm_logits(model, ids).detach()
    model, _ = sst.convert(model, sst.SSTConfig(rank=4))
    torch.testing.assert_close(lm_logits(model, ids), before, rtol=1e-4, atol=1e-4)
    converted = [n for n, m in model.named_modules() if isinstance(m, sst.SpectralLinear)]
    assert any(n.endswith("q_proj") for n in converted) and any(n.endswith("fc1") or n.endswith("up_proj") for n in converted)
    assert not isinstance(model.get_output_embeddings(), sst.SpectralLinear)


def test_python_configs_are_type_checked_too():
    with pytest.raises(sst.ConfigError, match=r"method.rank: expected an integer, got '8'"):
        sst.SSTConfig(rank="8")
    with pytest.raises(sst.ConfigError, match=r"method.sampling: 'random' is not one of \['multinomial'"):
        sst.SSTConfig(rank=8, sampling="random")
    assert sst.GaLoreConfig(rank=4, scale=1).scale == 1.0 and isinstance(sst.GaLoreConfig(scale=1).scale, float)


def test_a_single_pattern_may_be_a_string(tiny_mlp, tmp_path):
    cfg = sst.SSTConfig(rank=2, target_modules="all-linear", exclude_modules="mid")
    assert cfg.target_modules == ["all-linear"] and cfg.exclude_modules == ["mid"]
    model, _ = sst.convert(tiny_mlp, cfg)
    assert isinstance(model.up, sst.SpectralLinear) and type(model.mid) is nn.Linear
    assert sst.LoRAConfig(target_modules="q_proj").target_modules == ["q_proj"]
    assert sst.load_config("tiny/lm", ["method.target_modules=q_proj"]).method.target_modules == ["q_proj"]
    path = tmp_path / "run.yaml"
    path.write_text("task: {name: lm, model: tiny}\nmethod: {name: lora, rank: 2, target_modules: all-linear}\n")
    assert sst.load_config(str(path)).method.target_modules == ["all-linear"]
