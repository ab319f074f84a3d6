"""Loading run checkpoints, and exports that load into the plain model class with the same logits."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_model

from sst.inference.export import export_run, load_exported, prepare_for_export
from sst.inference.loading import load_run, resolve_checkpoint
from sst.inference.lowrank import LowRankLinear
from sst.inference.merge import mergeable_layers
from sst.models.hf import lm_logits
from sst.spectral.linear import SpectralLinear
from sst.checkpoint import CheckpointError


@pytest.fixture
def ids():
    return torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))


def test_load_run_prefers_best_and_rebuilds_the_method_layers(sst_run):
    assert resolve_checkpoint(sst_run) == sst_run / "best"
    assert resolve_checkpoint(sst_run / "last") == sst_run / "last"
    run = load_run(sst_run)
    assert run.config.method.name == "sst" and not run.model.training
    layers = mergeable_layers(run.model)
    assert layers and all(isinstance(m, SpectralLinear) for m in layers.values())
    assert len(layers) == 14  # 2 blocks x (q, k, v, o, gate, up, down)


def test_dense_export_loads_into_the_plain_model_class_with_the_same_logits(sst_run, tmp_path, ids):
    reference = lm_logits(load_run(sst_run).model, ids)
    out = export_run(sst_run, tmp_path / "dense")
    assert {"model.safetensors", "config.yaml", "export.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    model = load_exported(out)
    assert not mergeable_layers(model)
    torch.testing.assert_close(lm_logits(model, ids), reference, rtol=1e-4, atol=1e-4)
    # The same file loads strictly into a model built directly by the task, without sst layers.
    run = load_run(sst_run)
    plain = run.task.build_model()
    missing, unexpected = load_model(plain, str(out / "model.safetensors"))
    assert not missing and not unexpected
    torch.testing.assert_close(lm_logits(plain.eval(), ids), reference, rtol=1e-4, atol=1e-4)


def test_lowrank_export_matches_the_pruned_model(sst_run, tmp_path, ids):
    run = load_run(sst_run)
    ranks = prepare_for_export(run, "lowrank", ratio=0.6)
    assert all(r.rank == 26 for r in ranks.values())  # ceil(0.4 * 64)
    reference = lm_logits(run.model, ids)
    out = export_run(sst_run, tmp_path / "low", "lowrank", ratio=0.6)
    model = load_exported(out)
    factored = [m for m in model.modules() if isinstance(m, LowRankLinear)]
    assert len(factored) == 14 and all(m.rank == 26 for m in factored)
    torch.testing.assert_close(lm_logits(model, ids), reference, rtol=1e-5, atol=1e-5)
    dense_params = sum(p.numel() for p in load_exported(export_run(sst_run, tmp_path / "d")).parameters())
    assert sum(p.numel() for p in model.parameters()) < dense_params


def test_export_rejects_bad_formats(sst_run, tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export_run(sst_run, tmp_path / "onnx", "onnx")
    with pytest.raises(ValueError, match="--ratio or --energy"):
        export_run(sst_run, tmp_path / "low", "lowrank")


def test_truncated_checkpoint_gives_a_checkpoint_error(sst_run, tmp_path):
    bad = tmp_path / "ckpt"
    shutil.copytree(sst_run / "best", bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_run(bad)


def test_mismatched_checkpoint_gives_a_checkpoint_error(sst_run, tmp_path):
    bad = tmp_path / "ckpt"
    shutil.copytree(sst_run / "best", bad)
    config = yaml.safe_load((bad / "config.yaml").read_text())
    config["method"]["rank"] = 8  # the weights were saved with rank 4
    (bad / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_run(bad)
    config["method"]["no_such_key"] = 1
    (bad / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CheckpointError, match="not a valid run config"):
        load_run(bad)


def test_missing_checkpoints_give_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_run(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        load_run(tmp_path / "empty")


def test_hf_export_loads_with_from_pretrained(make_run, tmp_path, ids):
    transformers = pytest.importorskip("transformers")
    run_dir = make_run(tmp_path / "hf_run", {"name": "sst", "rank": 4, "resample_every": 2}, model="hf:llama-tiny")
    reference = lm_logits(load_run(run_dir).model, ids)
    out = export_run(run_dir, tmp_path / "hf", "hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference, rtol=1e-4, atol=1e-4)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    assert tokenizer.decode(tokenizer("low rank model").input_ids) == "low rank model"
    assert model.config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
