"""The pruning study: metric against prune ratio, written as prune.json and prune.png."""

from __future__ import annotations

import json

import pytest

from sst.inference.loading import load_run
from sst.inference.pruning import headline_metric, plot_curves, prune_curve, prune_study


def test_prune_curve_starts_at_the_unpruned_metric(sst_run):
    run = load_run(sst_run)
    unpruned = run.task.evaluate(run.model, "val", 2)["val_ppl"]
    curve = prune_curve(run, [0.0, 0.5, 0.9], max_batches=2)
    assert curve["metric"] == "val_ppl" and curve["method"] == "sst" and curve["pruned_layers"] == 14
    values = [p["value"] for p in curve["points"]]
    assert values[0] == pytest.approx(unpruned, rel=1e-5)
    kept = [p["kept_singular_values"] for p in curve["points"]]
    assert kept == [14 * 64, 14 * 32, 14 * 7]  # ceil((1 - p) 64) per layer
    energy = [p["mean_energy_kept"] for p in curve["points"]]
    assert energy[0] == pytest.approx(1.0) and energy[0] > energy[1] > energy[2] > 0
    assert values[2] != values[0]


def test_full_rank_run_prunes_the_same_layers(full_run):
    run = load_run(full_run)
    curve = prune_curve(run, [0.0, 0.9], max_batches=1)
    assert curve["method"] == "full" and curve["pruned_layers"] == 14
    assert curve["points"][1]["kept_singular_values"] == 14 * 7


def test_prune_study_writes_json_and_plot(sst_run, tmp_path):
    run = load_run(sst_run)
    curve = prune_study(run, tmp_path / "study", [0.0, 0.8], max_batches=1)
    saved = json.loads((tmp_path / "study" / "prune.json").read_text())
    assert saved["points"][1]["ratio"] == 0.8 and saved == json.loads(json.dumps(curve))
    png = (tmp_path / "study" / "prune.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert headline_metric(run, "test") == "test_ppl"
    two = plot_curves({"a": curve, "b": curve}, tmp_path / "two.png")
    assert two.stat().st_size > 1000


def test_prune_curve_rejects_bad_ratios(sst_run):
    with pytest.raises(ValueError, match="ratio"):
        prune_curve(load_run(sst_run), [0.5, 1.0], max_batches=1)
