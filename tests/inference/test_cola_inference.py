"""A CoLA run keeps its two-matrix form: inference loads it, ``--format cola`` exports it (A, B and
bias per layer) and reads back with the run's own function; the other formats and pruning refuse."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from sst.cli import main
from sst.config import ConfigError
from sst.errors import CheckpointError, UsageError
from sst.inference.export import export_run
from sst.inference.loading import load_run
from sst.inference.opening import open_for_inference
from sst.inference.pruning import prune_curve
from sst.methods.cola_linear import CoLALinear
from sst.models.hf import lm_logits


@pytest.fixture(scope="module")
def cola_run(tmp_path_factory, make_run):
    return make_run(tmp_path_factory.mktemp("runs") / "cola", {"name": "cola", "rank": 4})


def test_a_cola_run_loads_with_its_layers_and_evaluates(cola_run, capsys):
    run = load_run(cola_run)
    layers = [m for m in run.model.modules() if isinstance(m, CoLALinear)]
    assert len(layers) == 14
    assert main(["eval", str(cola_run), "--max-batches", "1"]) == 0
    assert '"val_loss"' in capsys.readouterr().out


@pytest.mark.parametrize("format,extra", [("dense", {}), ("lowrank", {"ratio": 0.5}), ("pifa", {"ratio": 0.5})])
def test_every_export_format_refuses_cola_layers_clearly(cola_run, tmp_path, format, extra):
    with pytest.raises(ConfigError, match=rf"a {format} export: 14 layer\(s\) \('layers.0.*are CoLALinear.*"
                                          r"use --format cola"):
        export_run(cola_run, tmp_path / format, format, **extra)
    assert not (tmp_path / format).exists()


def test_a_cola_hf_model_is_refused_by_hf_export_and_kept_by_format_cola(make_run, tmp_path):
    pytest.importorskip("transformers")
    run_dir = make_run(tmp_path / "hf_cola", {"name": "cola", "rank": 4}, model="hf:llama-tiny")
    with pytest.raises(ConfigError, match=r"a hf export: \d+ layer\(s\) .* are CoLALinear.*use --format cola"):
        export_run(run_dir, tmp_path / "hf", "hf")
    # --format cola fits a Hugging Face model too: the same logits from the export as from the run.
    exported, run = open_for_inference(export_run(run_dir, tmp_path / "cola", "cola")), load_run(run_dir)
    assert type(exported.model).__name__ == "LlamaForCausalLM"
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(lm_logits(exported.model, ids), lm_logits(run.model, ids), rtol=1e-6, atol=1e-6)


def test_pruning_refuses_cola_layers_clearly(cola_run, tmp_path, capsys):
    with pytest.raises(ConfigError, match="singular-value pruning: 14 layer.*no dense weight"):
        prune_curve(load_run(cola_run), ratios=[0.5], max_batches=1)
    assert main(["prune", str(cola_run), "--ratios", "0.5", "--out", str(tmp_path)]) == 2
    assert "are CoLALinear, a changed architecture" in capsys.readouterr().err
    for format in ("dense", "lowrank", "pifa"):
        assert main(["export", str(cola_run), "--out", str(tmp_path / "x"), "--format", format, "--ratio", "0.5"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "CoLALinear" in err and "use --format cola" in err
    assert not (tmp_path / "x").exists()


def test_the_refusal_leaves_the_caller_s_random_stream_alone(cola_run):
    run = load_run(cola_run)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    with pytest.raises(ConfigError):
        prune_curve(run, ratios=[0.5], max_batches=1)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------- --format cola


@pytest.fixture(scope="module")
def cola_export(cola_run, tmp_path_factory):
    return export_run(cola_run, tmp_path_factory.mktemp("exports") / "cola", "cola")


def evaluated(path, capsys) -> dict:
    assert main(["eval", str(path), "--max-batches", "2"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_cola_export_evaluates_to_the_run_s_val_loss_and_logits(cola_run, cola_export, capsys):
    run_loss = evaluated(cola_run, capsys)["val_loss"]
    assert evaluated(cola_export, capsys)["val_loss"] == pytest.approx(run_loss, rel=1e-6)
    exported, run = open_for_inference(cola_export), load_run(cola_run)
    assert run.method is not None and exported.method is None
    assert len([m for m in exported.model.modules() if isinstance(m, CoLALinear)]) == 14
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(lm_logits(exported.model, ids), lm_logits(run.model, ids), rtol=1e-6, atol=1e-6)


def test_a_cola_export_generates_what_the_run_generates(cola_run, cola_export, capsys):
    texts = []
    for path in (cola_run, cola_export):
        assert main(["generate", str(path), "--prompt", "the model", "--max-new-tokens", "4", "--seed", "3"]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0].startswith("the model") and texts[1] == texts[0]


def test_a_cola_export_holds_two_matrices_per_layer_and_no_dense_weight(cola_export):
    shapes = json.loads((cola_export / "cola.json").read_text())
    assert len(shapes) == 14 and json.loads((cola_export / "export.json").read_text())["format"] == "cola"
    with safe_open(str(cola_export / "model.safetensors"), "pt") as f:
        stored = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    for name, shape in shapes.items():
        assert stored[f"{name}.A"] == (shape["rank"], shape["in_features"]) and shape["rank"] == 4
        assert stored[f"{name}.B"] == (shape["out_features"], shape["rank"])
        assert f"{name}.weight" not in stored
        assert (f"{name}.bias" in stored) == shape["use_bias"]


def test_format_cola_refuses_pruning_and_runs_without_cola_layers(cola_run, sst_run, tmp_path, capsys):
    with pytest.raises(UsageError, match="--format cola keeps every CoLA layer whole.*drop --ratio/--energy"):
        export_run(cola_run, tmp_path / "pruned", "cola", ratio=0.5)
    assert main(["export", str(sst_run), "--out", str(tmp_path / "sst"), "--format", "cola"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--format cola needs CoLALinear layers" in err and "use --format dense" in err
    assert not (tmp_path / "pruned").exists() and not (tmp_path / "sst").exists()


def test_a_cola_description_that_does_not_fit_the_model_is_refused(cola_export, tmp_path):
    import shutil

    broken = shutil.copytree(cola_export, tmp_path / "broken")
    shapes = json.loads((broken / "cola.json").read_text())
    shapes["layers.99.nowhere"] = next(iter(shapes.values()))
    (broken / "cola.json").write_text(json.dumps(shapes))
    with pytest.raises(CheckpointError, match=r"cola.json: layer 'layers.99.nowhere' is not in LlamaModel"):
        open_for_inference(broken)
