"""The GPU benchmark scripts run end to end on tiny CPU settings and file their results."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_memory_records_every_method(tmp_path):
    report = load("throughput_memory").main([
        "--model", "tiny", "--vocab-size", "300", "--seq-len", "16", "--batch-size", "2",
        "--warmup", "1", "--steps", "3", "--interval", "3", "--device", "cpu", "--out", str(tmp_path),
    ])
    saved = json.loads((tmp_path / "throughput_memory_cpu.json").read_text())
    rows = {r["method"]: r for r in saved["rows"]}
    assert list(rows) == ["full", "lora", "relora", "galore", "sst"]
    assert saved["settings"]["rank"] == 8 and saved["torch"] and saved["steps"] == 4
    assert rows["full"]["block_state_ratio"] == 1.0 and rows["full"]["step_ratio"] == 1.0
    # Tiny LLaMA blocks (d 64, r 8): SST keeps r (in + out) + k moments per layer, far below 1/2.
    assert 0.0 < rows["sst"]["block_state_ratio"] < 0.5
    assert rows["sst"]["events_in_window"] == 1 and rows["sst"]["resvd_period_steps"] == 3 * 8
    assert all(r["finite"] and r["tokens_per_second"] > 0 for r in rows.values())
    assert report["targets"]["state_target_met"] == (rows["sst"]["block_state_ratio"] <= 0.25)
    assert "SST block optimizer state" in (tmp_path / "throughput_memory_cpu.md").read_text()


def _corpus(path: Path) -> Path:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    docs = [" ".join(words[(i + j) % len(words)] for j in range(12)) + "." for i in range(120)]
    path.write_text("\n\n".join(docs))
    return path


def test_lm_compare_files_report(tmp_path):
    corpus = _corpus(tmp_path / "corpus.txt")
    report = load("lm_compare").main([
        "--config", "tiny/lm", "--methods", "full,lora,sst", "--runs", str(tmp_path / "runs"),
        "--out", str(tmp_path / "out"), f"task.data=[{corpus}]", "task.vocab_size=300",
        "task.seq_len=16", "task.batch_size=2", "task.max_train_tokens=0",
        f"task.cache_dir={tmp_path / 'cache'}", "train.steps=3", "train.eval_every=0",
    ])
    stem = tmp_path / "out" / "lm_compare_tiny_cpu"
    saved = json.loads(stem.with_suffix(".json").read_text())
    assert [s["method"] for s in saved["summary"]] == ["full", "lora", "sst"]
    assert saved["steps"] == 3 and saved["tokens_per_method"] == 3 * 2 * 16
    assert saved["epochs"] == pytest.approx(6 / report["runs"][0]["task"]["train_sequences"])
    assert saved["resolved_config"]["task"]["seq_len"] == 16 and saved["device"] == "cpu"
    assert "Gap reduction" in stem.with_suffix(".md").read_text()
    assert stem.with_suffix(".png").stat().st_size > 1000


def test_mt_compare_reports_gap_per_geometry_and_width(tmp_path):
    report = load("mt_compare").main([
        "--config", "tiny/translation", "--widths", "16", "--methods", "full,lora,sst",
        "--geometries", "euclidean,lorentz", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
        f"task.cache_dir={tmp_path}", "train.steps=2", "task.bleu_max_sentences=5",
    ])
    saved = json.loads((tmp_path / "out" / "mt_compare_cpu.json").read_text())
    euclidean, lorentz = saved["widths"]
    assert (euclidean["geometry"], lorentz["geometry"]) == ("euclidean", "lorentz")
    assert saved["resolved_configs"]["lorentz/16"]["task"]["geometry"] == "lorentz"
    for width in (euclidean, lorentz):
        assert width["d_model"] == 16 and width["rank"] == 2
        assert set(width["methods"]) == {"full", "lora", "sst"}
        assert all(0.0 <= m["test_bleu"] <= 100.0 for m in width["methods"].values())
        assert set(width["gap_reduction"]) == {"val", "test"} and report["steps"] == 2
        ppl = {m: v["test_ppl"] for m, v in width["methods"].items()}
        expected = (ppl["lora"] - ppl["sst"]) / (ppl["lora"] - ppl["full"])  # LoRA is the only low-rank baseline
        assert width["ppl_gap_reduction"]["test"] == pytest.approx(expected)
    assert (tmp_path / "runs" / "lorentz" / "d16" / "sst" / "results.json").is_file()
    assert set(saved["average_gap_reduction"]) == set(saved["average_ppl_gap_reduction"]) == {"euclidean", "lorentz"}
    deltas = {row["split"]: row["delta"] for row in saved["geometry_deltas"]}
    for split in ("val", "test"):
        for m in ("full", "lora", "sst"):
            expected = lorentz["methods"][m][f"{split}_bleu"] - euclidean["methods"][m][f"{split}_bleu"]
            assert deltas[split][m] == pytest.approx(expected)
    text = (tmp_path / "out" / "mt_compare_cpu.md").read_text()
    assert "| Lorentz | 16 | 2 | test |" in text and "Hyperbolic minus Euclidean" in text


def test_mt_compare_bleu_gap_needs_a_full_rank_lead():
    bleu_gap = load("mt_compare").bleu_gap
    scores = {"full": 5.0, "lora": 1.0, "relora": 2.0, "sst": 3.0}
    gap, lead = bleu_gap(scores, min_gap=0.5)
    assert gap == pytest.approx((2.0 - 3.0) / (2.0 - 5.0)) and lead == pytest.approx(3.0)
    assert bleu_gap(scores, min_gap=4.0) == (None, pytest.approx(3.0))  # noise over noise: undefined
    assert bleu_gap({"full": 1.0, "sst": 0.5}, min_gap=0.0) == (None, None)
