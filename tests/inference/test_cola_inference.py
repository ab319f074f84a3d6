"""A CoLA run keeps its two-matrix form: inference loads it; export and pruning refuse clearly."""

from __future__ import annotations

import pytest
import torch

from sst.cli import main
from sst.config import ConfigError
from sst.inference.export import export_run
from sst.inference.loading import load_run
from sst.inference.pruning import prune_curve
from sst.methods.cola_linear import CoLALinear


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
    with pytest.raises(ConfigError, match=rf"a {format} export: 14 layer\(s\) \('layers.0.*are CoLALinear"):
        export_run(cola_run, tmp_path / format, format, **extra)
    assert not (tmp_path / format).exists()


def test_an_hf_export_refuses_cola_layers_rather_than_save_what_from_pretrained_cannot_read(make_run, tmp_path):
    pytest.importorskip("transformers")
    run_dir = make_run(tmp_path / "hf_cola", {"name": "cola", "rank": 4}, model="hf:llama-tiny")
    with pytest.raises(ConfigError, match=r"a hf export: \d+ layer\(s\) .* are CoLALinear"):
        export_run(run_dir, tmp_path / "hf", "hf")


def test_pruning_refuses_cola_layers_clearly(cola_run, tmp_path, capsys):
    with pytest.raises(ConfigError, match="singular-value pruning: 14 layer.*no dense weight"):
        prune_curve(load_run(cola_run), ratios=[0.5], max_batches=1)
    assert main(["prune", str(cola_run), "--ratios", "0.5", "--out", str(tmp_path)]) == 2
    assert "are CoLALinear, a changed architecture" in capsys.readouterr().err
    assert main(["export", str(cola_run), "--out", str(tmp_path / "x")]) == 2
    assert "use the run directory itself" in capsys.readouterr().err


def test_the_refusal_leaves_the_caller_s_random_stream_alone(cola_run):
    run = load_run(cola_run)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    with pytest.raises(ConfigError):
        prune_curve(run, ratios=[0.5], max_batches=1)
    assert torch.equal(torch.rand(3), expected)
