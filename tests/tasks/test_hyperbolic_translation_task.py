"""Translation with geometry: lorentz: config, model building and every method through the train loop."""

import pytest
import torch

from sst.config import ConfigError, build_config
from sst.hyperbolic import math as hm
from sst.models.hyperbolic_transformer import HyboNetTransformer
from sst.tasks.translation import TranslationTask, TranslationTaskConfig, build_translation_model
from sst.train.logging import read_metrics
from sst.train.loop import train

pytest.importorskip("sacrebleu")


def run_config(tmp_path, data_dir, method, steps, **train_overrides):
    return {
        "task": {"name": "translation", "data": "synthetic", "geometry": "lorentz", "curvature": 1.0,
                 "data_dir": str(data_dir), "vocab_size": 64, "d_model": 32, "n_layers": 1, "n_heads": 2,
                 "max_tokens": 256, "max_len": 16, "dropout": 0.0, "bleu_max_sentences": 8},
        "method": method,
        "train": {"steps": steps, "lr": 3e-3, "warmup_steps": 2, "eval_batches": 1, "log_every": 1,
                  "progress": False, **train_overrides},
        "out_dir": str(tmp_path / "run"),
        "seed": 0,
    }  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def test_curvature_is_validated_and_reaches_the_model():
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="task.curvature"):
            TranslationTaskConfig(geometry="lorentz", curvature=bad)
    cfg = TranslationTaskConfig(geometry="lorentz", curvature=2.0, d_model=16, n_heads=2, n_layers=1)
    model = build_translation_model(cfg, vocab_size=40)
    assert isinstance(model, HyboNetTransformer)
    assert model.config.K == 2.0 and model.config.d_ff == 64 and model.config.vocab_size == 40
    memory, _ = model.encode(torch.randint(3, 40, (2, 5)))
    assert hm.manifold_residual(memory, 2.0).max() < 1e-5


def test_short_training_reduces_loss(tmp_path, data_dir):
    method = {"name": "sst", "rank": 4, "resample_every": 20, "restart_warmup_steps": 2}
    results = train(build_config(run_config(tmp_path, data_dir, method, steps=40, log_every=10)))
    losses = [r["loss"] for r in read_metrics(tmp_path / "run", "train")]
    assert len(losses) == 4 and all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.4, losses  # first window (steps 1-10) against the last
    assert results["val_loss"] < 3.6 and 0.0 <= results["test_bleu"] <= 100.0


@pytest.mark.parametrize("method", [
    {"name": "full"},
    {"name": "lora", "rank": 2},
    {"name": "relora", "rank": 2, "reset_every": 2, "restart_warmup_steps": 1},
    {"name": "galore", "rank": 2, "proj_update_every": 2},
    {"name": "sst", "rank": 2, "resample_every": 2, "restart_warmup_steps": 1},
])  # fmt: skip
def test_every_method_trains_and_stays_on_the_manifold(tmp_path, data_dir, monkeypatch, method):
    built = []
    original = TranslationTask.build_model

    def keep(self):
        model = original(self)
        if next(model.parameters()).device.type != "meta":  # not the memory check's shape-only build
            built.append(model)
        return model

    monkeypatch.setattr(TranslationTask, "build_model", keep)
    results = train(build_config(run_config(tmp_path, data_dir, method, steps=4)))
    assert all(torch.isfinite(torch.tensor(v)) for v in results.values() if isinstance(v, float))
    losses = [r["loss"] for r in read_metrics(tmp_path / "run", "train")]
    assert len(losses) == 4 and all(0.0 < x < 10.0 for x in losses)
    (model,) = built
    assert all(torch.isfinite(p).all() for p in model.parameters())
    src = torch.randint(3, model.config.vocab_size, (3, 6))
    with hm.validate_inputs(True):
        memory, mask = model.encode(src)
        logits = model.decode(torch.full((3, 4), model.config.bos_id), memory, mask)
    assert hm.manifold_residual(memory).max() < 1e-5 and torch.isfinite(logits).all()
