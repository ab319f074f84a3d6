"""benchmarks/graph_compare.py end to end on a tiny generated tree: lr chosen on validation, full-rank
shared across ranks, mean/std at the chosen lr, gap reduction, divergence recorded."""

import importlib.util
import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from sst.train.compare import gap_reduction

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "graph_compare.py"


@pytest.fixture(scope="module")
def graph_compare():
    spec = importlib.util.spec_from_file_location("graph_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


TINY = ["task.tree_nodes=60", "train.steps=6", "train.eval_every=2", "method.resample_every=2"]


def test_lr_is_tuned_on_validation_and_tables_are_written(graph_compare, tmp_path):
    out, runs = tmp_path / "results", tmp_path / "runs"
    argv = ["--task", "node_classification", "--datasets", "disease_tree", "--methods", "full,lora,sst",
            "--seeds", "0,1", "--tune-seeds", "1", "--ranks", "1,2", "--lrs", "0.001,0.05",
            "--tag", "tuned", "--runs-dir", str(runs), "--out", str(out), *TINY]
    assert graph_compare.main(argv) == 0
    report = json.loads((out / "graph_node_classification_tuned.json").read_text())
    entry = report["datasets"]["disease_tree"]
    assert report["ranks"] == [1, 2] and report["lrs"] == [0.001, 0.05] and report["tune_seeds"] == 1
    assert entry["metric"] == "test_f1" and entry["budget"]["max_steps"] == 6
    by_run = {(r["method"], r["rank"], r["lr"], r["seed"]): r for r in entry["runs"]}
    # full-rank: trained once for both ranks; each low-rank method: 2 lrs x seed 0, then seed 1 at the best lr
    assert sum(1 for k in by_run if k[0] == "full") == 3
    assert sum(1 for k in by_run if k[0] == "sst" and k[1] == 2) == 3
    # the harness's sweep layout: one comparison for full-rank, one per rank for the others
    assert (runs / "node_classification/disease_tree/full-rank/full/lr=0.05/seed0/results.json").is_file()
    assert (runs / "node_classification/disease_tree/r1/sst/lr=0.001/seed0/results.json").is_file()
    assert not (runs / "node_classification/disease_tree/r1/full").exists()
    for rank in ("1", "2"):
        summary = entry["ranks"][rank]["summary"]
        for method, s in summary.items():
            r = None if method == "full" else int(rank)
            vals = {lr: by_run[(method, r, lr, 0)]["val"] for lr in (0.001, 0.05)}
            assert s["val_by_lr"] == {f"{lr:g}": v for lr, v in vals.items()}
            assert s["lr"] == max(vals, key=vals.get) and s["lr_at_edge"]
            tests = [by_run[(method, r, s["lr"], seed)]["test"] for seed in (0, 1)]
            assert s["seeds"] == 2 and s["mean"] == pytest.approx(statistics.fmean(tests))
            assert s["std"] == pytest.approx(abs(tests[0] - tests[1]) / math.sqrt(2))
            assert (method, r, 0.001 if s["lr"] == 0.05 else 0.05, 1) not in by_run  # not tuned on seed 1
        assert entry["ranks"]["1"]["summary"]["full"] == entry["ranks"]["2"]["summary"]["full"]
        expected = gap_reduction({m: s["mean"] for m, s in summary.items()}, True)
        assert entry["ranks"][rank]["gap_reduction"] == pytest.approx(expected)
        assert report["by_rank"][rank]["mean_gap_reduction"] == pytest.approx(expected)
    text = (out / "graph_node_classification_tuned.md").read_text()
    assert "## r = 1" in text and "## r = 2" in text and "| disease_tree |" in text and "*)" in text
    assert "paper: 73.7%" in text
    # a second invocation reuses the finished runs and writes the same numbers
    assert graph_compare.main(argv) == 0
    again = json.loads((out / "graph_node_classification_tuned.json").read_text())["datasets"]["disease_tree"]
    assert again["ranks"] == entry["ranks"]


def test_divergence_is_recorded_not_raised(graph_compare, tmp_path, monkeypatch):
    from sst.train import compare
    from sst.train.loop import NonFiniteLossError

    real = compare.train

    def fake(config, resume=False):
        if config.method.name == "sst" or (config.method.name == "lora" and config.train.lr == 0.05):
            raise NonFiniteLossError(f"training loss became nan at step 3 (method {config.method.name})")
        return real(config, resume)

    monkeypatch.setattr(compare, "train", fake)  # graph_compare trains through run_comparison
    out = tmp_path / "results"
    argv = ["--task", "node_classification", "--datasets", "disease_tree", "--methods", "full,lora,sst",
            "--seeds", "0", "--ranks", "2", "--lrs", "0.01,0.05", "--runs-dir", str(tmp_path / "runs"),
            "--out", str(out), *TINY]
    assert graph_compare.main(argv) == 0
    entry = json.loads((out / "graph_node_classification.json").read_text())["datasets"]["disease_tree"]
    summary = entry["ranks"]["2"]["summary"]
    assert summary["sst"]["diverged"] and summary["sst"]["diverged_lrs"] == ["0.01", "0.05"]
    assert summary["lora"]["lr"] == 0.01 and summary["lora"]["val_by_lr"]["0.05"] is None
    assert any("nan" in r.get("diverged", "") for r in entry["runs"])
    assert entry["ranks"]["2"]["gap_reduction"] is None
    text = (out / "graph_node_classification.md").read_text()
    assert "diverged" in text and "| disease_tree | lora | 2 |" in text


def test_full_rank_is_a_ceiling_only_when_it_beats_every_method(graph_compare):
    s = {"full": {"mean": 0.9}, "lora": {"mean": 0.8}, "sst": {"mean": 0.85}, "galore": {"diverged": True}}
    assert graph_compare.full_is_ceiling(s, higher_is_better=True)
    assert not graph_compare.full_is_ceiling({**s, "sst": {"mean": 0.95}}, higher_is_better=True)
    assert not graph_compare.full_is_ceiling(s, higher_is_better=False)  # a loss: lower is better
    assert not graph_compare.full_is_ceiling({**s, "full": {"diverged": True}}, higher_is_better=True)
