import pytest

from sst.config import ConfigError, apply_overrides, build_config, list_presets, load_config, to_dict
from sst.methods import SSTConfig


def base():
    return {"task": {"name": "lm", "model": "tiny"}, "method": {"name": "sst", "rank": 4}}


def test_round_trip_and_typed_values():
    cfg = build_config({**base(), "train": {"lr": 1, "betas": [0.9, 0.95]}})
    assert isinstance(cfg.method, SSTConfig) and cfg.train.lr == 1.0 and cfg.train.betas == (0.9, 0.95)
    assert build_config(to_dict(cfg)) == cfg


@pytest.mark.parametrize("data,message", [
    ({"train": {"lrr": 1}}, r"unknown config key\(s\) \['train.lrr'\]; allowed: .*'lr'"),
    ({"train": {"steps": "ten"}}, r"train.steps: expected an integer, got 'ten'"),
    ({"train": {"compile": 1}}, r"train.compile: expected true/false"),
    ({"train": {"schedule": "step"}}, r"train.schedule: 'step' is not one of \['cosine'"),
    ({"train": {"parallelism": "zero3"}}, r"train.parallelism: 'zero3' is not one of \['ddp', 'fsdp'\]"),
    ({"method": {"name": "sst", "rank": 4, "sampling": "random"}}, r"method.sampling: 'random' is not one of"),
    ({"method": {"name": "dora", "rank": 4}}, r"method.name: 'dora' is not one of \[.*'full', 'galore'"),
    ({"method": {"name": "sst", "rank": 0}}, r"method.rank: must be >= 1, got 0"),
    ({"method": {"name": "lora", "resample_every": 3}}, r"unknown config key\(s\) \['method.resample_every'\]"),
    ({"task": {"name": "lm", "seq_len": 0}}, r"task.seq_len"),
])
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        build_config({**base(), **data})


def test_missing_sections():
    with pytest.raises(ConfigError, match="missing required key 'method'"):
        build_config({"task": {"name": "lm"}})


def test_overrides_parse_yaml_values_and_switch_kinds():
    data = apply_overrides(base(), ["train.lr=3e-4", "method.name=lora", "method.alpha=16", "seed=3"])
    assert data["train"]["lr"] == 3e-4 and data["seed"] == 3
    assert data["method"] == {"name": "lora", "rank": 4, "alpha": 16}  # rank kept, SST-only keys dropped
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        apply_overrides(base(), ["train.lr"])


def test_presets_load():
    names = list_presets()
    assert "tiny/lm" in names and "lm-demo" in names
    for name in names:
        load_config(name)
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no-such-preset")


def test_switching_method_carries_the_shared_interval():
    # tiny/lm is SST with resample_every: 5; each method's interval_key plays that role.
    assert load_config("tiny/lm", ["method.name=relora"]).method.reset_every == 5
    assert load_config("tiny/lm", ["method.name=galore"]).method.proj_update_every == 5
    relora_galore = load_config("tiny/lm", ["method.name=relora", "method.name=galore"]).method
    assert relora_galore.proj_update_every == 5
    back = load_config("tiny/lm", ["method.name=relora", "method.reset_every=7", "method.name=sst"])
    assert back.method.resample_every == 7
    # an explicit value of the new kind's key wins, before or after the switch
    assert load_config("tiny/lm", ["method.name=relora", "method.reset_every=50"]).method.reset_every == 50
    assert load_config("tiny/lm", ["method.reset_every=50", "method.name=relora"]).method.reset_every == 50
    lora = load_config("tiny/lm", ["method.name=lora"]).method  # no interval: nothing to carry
    assert lora.name == "lora" and not hasattr(lora, "resample_every")
