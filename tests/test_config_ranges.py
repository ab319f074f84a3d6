"""Every numeric config field rejects out-of-range values with a ConfigError naming its key."""

import pytest

import sst
from sst.config import ConfigError, TrainConfig, load_config
from sst.schema import check_range

BAD = [
    # (preset, overrides separated by ";", key, allowed range in the message)
    ("tiny/lm", "train.steps=0", "train.steps", ">= 1"),
    ("tiny/lm", "train.grad_accum=0", "train.grad_accum", ">= 1"),
    ("tiny/lm", "train.lr=-1.0", "train.lr", "> 0"),
    ("tiny/lm", "train.lr=0", "train.lr", "> 0"),
    ("tiny/lm", "train.lr=.inf", "train.lr", "finite and > 0"),
    ("tiny/lm", "train.lr=.nan", "train.lr", "finite and > 0"),
    ("tiny/lm", "train.weight_decay=-0.1", "train.weight_decay", ">= 0"),
    ("tiny/lm", "train.betas=[1.0, 0.999]", "train.betas[0]", "in [0, 1)"),
    ("tiny/lm", "train.betas=[0.9, -0.5]", "train.betas[1]", "in [0, 1)"),
    ("tiny/lm", "train.adam_eps=0", "train.adam_eps", "> 0"),
    ("tiny/lm", "train.warmup_steps=-1", "train.warmup_steps", ">= 0"),
    ("tiny/lm", "train.warmup_ratio=1.0", "train.warmup_ratio", "in [0, 1)"),
    ("tiny/lm", "train.min_lr_ratio=1.5", "train.min_lr_ratio", "in [0, 1]"),
    ("tiny/lm", "train.grad_clip=-1", "train.grad_clip", ">= 0"),
    ("tiny/lm", "train.eval_every=-5", "train.eval_every", ">= 0"),
    ("tiny/lm", "train.eval_batches=-1", "train.eval_batches", ">= 0"),
    ("tiny/lm", "train.log_every=0", "train.log_every", ">= 1"),
    ("tiny/lm", "train.save_every=-1", "train.save_every", ">= 0"),
    ("tiny/lm", "train.save_every_minutes=-1", "train.save_every_minutes", ">= 0"),
    ("tiny/lm", "train.save_every_minutes=nan", "train.save_every_minutes", ">= 0"),
    ("tiny/lm", "train.patience=-2", "train.patience", ">= 0"),
    ("tiny/lm", "method.rank=0", "method.rank", ">= 1"),
    ("tiny/lm", "method.resample_every=0", "method.resample_every", ">= 1"),
    ("tiny/lm", "method.round_every=-1", "method.round_every", ">= 0"),
    ("tiny/lm", "method.restart_warmup_steps=-1", "method.restart_warmup_steps", ">= 0"),
    ("tiny/lm", "method.eps=0", "method.eps", "> 0"),
    ("tiny/lm", "method.name=lora;method.alpha=-1", "method.alpha", ">= 0"),
    ("tiny/lm", "method.name=relora;method.reset_every=0", "method.reset_every", ">= 1"),
    ("tiny/lm", "method.name=relora;method.warm_start_steps=-1", "method.warm_start_steps", ">= 0"),
    ("tiny/lm", "method.name=galore;method.proj_update_every=0", "method.proj_update_every", ">= 1"),
    ("tiny/lm", "method.name=galore;method.scale=0", "method.scale", "> 0"),
    ("tiny/lm", "task.seq_len=0", "task.seq_len", ">= 1"),
    ("tiny/lm", "task.batch_size=-3", "task.batch_size", ">= 1"),
    ("tiny/lm", "task.d_model=-64", "task.d_model", ">= 0"),
    ("tiny/lm", "task.n_heads=3", "task.n_heads", "does not divide task.d_model=64"),
    ("tiny/lm", "task.d_model=68", "task.n_heads", "heads of even size"),  # 68 / 4 = 17: no rotary
    ("tiny/lm", "task.val_fraction=1.0", "task.val_fraction", "in (0, 1)"),
    ("tiny/translation", "task.d_model=0", "task.d_model", ">= 1"),
    ("tiny/translation", "task.n_heads=3", "task.n_heads", "does not divide task.d_model=32"),
    ("tiny/translation", "task.dropout=1.0", "task.dropout", "in [0, 1)"),
    ("tiny/translation", "task.label_smoothing=-0.1", "task.label_smoothing", "in [0, 1)"),
    ("tiny/translation", "task.beam_size=0", "task.beam_size", ">= 1"),
    ("tiny/translation", "task.length_penalty=-1", "task.length_penalty", ">= 0"),
    ("tiny/hyperbolic_translation", "task.curvature=0", "task.curvature", "> 0"),
    ("tiny/node_classification", "task.hidden=0", "task.hidden", ">= 1"),
    ("tiny/node_classification", "task.n_layers=0", "task.n_layers", ">= 1"),
    ("tiny/node_classification", "task.dropout=-0.5", "task.dropout", "in [0, 1)"),
    ("tiny/link_prediction", "task.t=0", "task.t", "> 0"),
    ("tiny/link_prediction", "task.test_fraction=0", "task.test_fraction", "in (0, 1)"),
]


@pytest.mark.parametrize("preset,overrides,key,allowed", BAD, ids=[f"{p}:{o}" for p, o, _, _ in BAD])
def test_out_of_range_value_names_key_and_range(preset, overrides, key, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(preset, overrides.split(";"))
    message = str(err.value)
    assert message.startswith(f"{key}: ") and allowed in message


def test_boundary_values_are_accepted():
    cfg = load_config("tiny/lm", [
        "train.weight_decay=0", "train.betas=[0, 0]", "train.warmup_ratio=0", "train.min_lr_ratio=1",
        "train.grad_clip=0", "train.patience=0", "method.round_every=0",
    ])
    assert cfg.train.min_lr_ratio == 1.0 and cfg.train.betas == (0.0, 0.0)


def test_python_callers_get_the_same_checks():
    with pytest.raises(ConfigError, match=r"^train.lr: must be > 0, got -1.0$"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ConfigError, match=r"^train.steps: expected a number, got 'ten'$"):
        TrainConfig(steps="ten")
    with pytest.raises(ConfigError, match=r"^method.eps: must be > 0"):
        sst.SSTConfig(eps=-1e-8)


def test_check_range_messages():
    check_range("x", 0.5, low=0, high=1)
    with pytest.raises(ConfigError, match=r"^x: must be in \(0, 1\] \(a note\), got 0$"):
        check_range("x", 0, low=0, high=1, low_inclusive=False, note="a note")
    with pytest.raises(ConfigError, match=r"^x: must be < 2, got 2$"):
        check_range("x", 2, high=2, high_inclusive=False)
    with pytest.raises(ConfigError, match=r"^x: must be finite, got nan$"):
        check_range("x", float("nan"))
    with pytest.raises(ConfigError, match=r"^x: expected a number, got True$"):
        check_range("x", True, low=0)

