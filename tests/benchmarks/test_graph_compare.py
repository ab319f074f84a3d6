"""benchmarks/graph_compare.py end to end on a tiny generated tree: files, mean/std and gap reduction."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

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


def test_main_writes_tables_with_mean_and_std(graph_compare, tmp_path):
    out = tmp_path / "results"
    argv = ["--task", "node_classification", "--datasets", "disease_tree", "--methods", "full,sst",
            "--seeds", "0,1", "--runs-dir", str(tmp_path / "runs"), "--out", str(out),
            "task.tree_nodes=60", "train.steps=4", "method.resample_every=2"]
    assert graph_compare.main(argv) == 0
    report = json.loads((out / "graph_node_classification.json").read_text())
    entry = report["datasets"]["disease_tree"]
    assert report["seeds"] == [0, 1] and report["rank"] == 2
    assert entry["metric"] == "test_f1" and entry["budget"]["max_steps"] == 4
    assert entry["config"]["task"]["tree_nodes"] == 60
    assert entry["method_configs"]["sst"]["resample_every"] == 2
    for method in ("full", "sst"):
        s = entry["summary"][method]
        values = [r["value"] for r in entry["runs"] if r["method"] == method]
        assert s["seeds"] == 2 and len(values) == 2
        assert s["mean"] == pytest.approx(sum(values) / 2)
        assert s["std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
        assert 0.0 <= s["mean"] <= 1.0 and s["steps_mean"] == 4
    # no LoRA/ReLoRA run: the gap reduction is undefined, not a made-up number
    assert entry["gap_reduction"] is None and report["mean_gap_reduction"] is None
    text = (out / "graph_node_classification.md").read_text()
    assert "| disease_tree |" in text and "±" in text and "test_f1" in text
    # the comparison's own report and each run's results sit in the runs folder
    assert (tmp_path / "runs" / "node_classification" / "disease_tree" / "results.json").is_file()
    assert (tmp_path / "runs" / "node_classification" / "disease_tree" / "sst" / "seed1" / "results.json").is_file()


def test_divergence_is_recorded_not_raised(graph_compare, tmp_path, monkeypatch):
    import sst.train.compare as compare
    from sst.train.loop import NonFiniteLossError

    real = compare.train

    def fake(config, resume=False):
        if config.method.name == "lora":
            raise NonFiniteLossError("training loss became nan at step 3 (method lora)")
        return real(config, resume)

    monkeypatch.setattr(compare, "train", fake)
    out = tmp_path / "results"
    argv = ["--task", "node_classification", "--datasets", "disease_tree", "--methods", "full,lora",
            "--seeds", "0", "--runs-dir", str(tmp_path / "runs"), "--out", str(out),
            "task.tree_nodes=30", "train.steps=2"]
    assert graph_compare.main(argv) == 0
    entry = json.loads((out / "graph_node_classification.json").read_text())["datasets"]["disease_tree"]
    assert entry["summary"]["lora"]["diverged"] and "nan" in entry["diverged"]["lora"]
    assert 0.0 <= entry["summary"]["full"]["mean"] <= 1.0
    assert entry["gap_reduction"] is None
    assert "diverged" in (out / "graph_node_classification.md").read_text()
