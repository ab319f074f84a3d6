"""The GPU benchmark scripts run end to end on tiny CPU settings and file their results."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from sst.errors import UsageError

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


def test_lm_ablation_compares_each_variant_with_the_default(tmp_path):
    corpus = _corpus(tmp_path / "corpus.txt")
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({"chosen": {"sst": {"cell": {"train.lr": 0.004}}}}))
    result = load("lm_ablation").main([
        "--config", "tiny/lm", "--variants", "default,top,active_s,orthogonal_init", "--seeds", "0,1",
        "--tuned", str(tuned), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--tag", "t",
        f"task.data=[{corpus}]", "task.vocab_size=300", "task.seq_len=16", "task.batch_size=2",
        "task.max_train_tokens=0", f"task.cache_dir={tmp_path / 'cache'}", "train.steps=3", "train.eval_every=0",
    ])
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["default", "top", "active_s", "orthogonal_init"]
    assert result["resolved_config"]["train"]["lr"] == 0.004
    for name, row in rows.items():
        assert row["seeds"] == 2 and len(row["values"]) == 2
        assert row["delta"] == pytest.approx(row["mean"] - rows["default"]["mean"])
    for name, key, value in (("top", "sampling", "top"), ("active_s", "singular_values", "active"),
                             ("orthogonal_init", "init", "orthogonal"), ("default", "init", "svd")):
        saved = yaml.safe_load((tmp_path / "runs" / name / "sst" / "seed1" / "config.yaml").read_text())
        assert saved["method"][key] == value and saved["train"]["lr"] == 0.004
    text = (tmp_path / "out" / "lm_ablation_t.md").read_text()
    assert "| active_s | only the r active singular values train |" in text
    assert (tmp_path / "out" / "lm_ablation_t.png").stat().st_size > 1000
    with pytest.raises(UsageError, match="include 'default'"):
        load("lm_ablation").main(["--config", "tiny/lm", "--variants", "top"])


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


def test_mt_compare_tunes_each_method_on_validation_and_averages_seeds(tmp_path):
    report = load("mt_compare").main([
        "--config", "tiny/translation", "--widths", "16", "--methods", "full,sst", "--geometries", "euclidean",
        "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--sweep", "train.lr=1e-3,1e-2",
        "--seeds", "0,1", f"task.cache_dir={tmp_path}", "train.steps=3", "task.bleu_max_sentences=5",
        "train.eval_every=1", "train.patience=1",
    ])
    (width,) = report["widths"]
    for name in ("full", "sst"):
        row = width["methods"][name]
        cells = [c for c in width["sweep"] if c["method"] == name]
        assert [c["cell"]["train.lr"] for c in cells] == [1e-3, 1e-2] and all(c["seed"] == 0 for c in cells)
        best = max(cells, key=lambda c: (c["val_bleu"], -cells.index(c)))  # first of equals, on validation only
        assert row["cell"] == best["cell"] and [c["chosen"] for c in cells] == [c is best for c in cells]
        assert row["seeds"] == [0, 1]
        chosen_dir = tmp_path / "runs" / "euclidean" / "d16" / name / f"lr={best['cell']['train.lr']}"
        scores = [json.loads((chosen_dir / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
        assert row["test_bleu"] == pytest.approx(sum(r["test_bleu"] for r in scores) / 2)
        assert row["test_ppl_std"] == pytest.approx(abs(scores[0]["test_ppl"] - scores[1]["test_ppl"]) / 2 ** 0.5)
        assert all(r["steps"] <= 3 for r in scores)
        assert row["steps"] == pytest.approx(sum(r["steps"] for r in scores) / 2)
        assert all(c["steps"] >= c["best_step"] >= 1 for c in cells)
    text = (tmp_path / "out" / "mt_compare_cpu.md").read_text()
    cell = next(c for c in width["sweep"] if c["method"] == "full")
    capped = ", cap" if cell["steps"] >= 3 else ""
    assert f"lr=0.001: {cell['val_bleu']:.2f} (best at {cell['best_step']} of {cell['steps']}{capped})" in text
    assert "Chosen per method on validation BLEU" in text and "lr=0.001: " in text and " ± " in text
    assert "tuned per method" in text and "stopped after 1 validations" in text
    assert "| geometry | d | r | split | full | SST | gap reduction |" in text  # one column per method run


def test_mt_compare_bleu_gap_needs_a_full_rank_lead():
    bleu_gap = load("mt_compare").bleu_gap
    scores = {"full": 5.0, "lora": 1.0, "relora": 2.0, "sst": 3.0}
    gap, lead = bleu_gap(scores, min_gap=0.5)
    assert gap == pytest.approx((2.0 - 3.0) / (2.0 - 5.0)) and lead == pytest.approx(3.0)
    assert bleu_gap(scores, min_gap=4.0) == (None, pytest.approx(3.0))  # noise over noise: undefined
    assert bleu_gap({"full": 1.0, "sst": 0.5}, min_gap=0.0) == (None, None)


def _memory_spec(**cell):
    return {"model": "tiny", "vocab_size": 300, "seq_len": 16, "steps": 2, "interval": 200, "seed": 0,
            "device": "cpu", "rank": 8, "method": "sst", "micro_batch": 1, "checkpointing": False,
            "variant": "", "overrides": [], **cell}


def test_memory_child_measures_the_peak_and_every_part_at_tiny_size():
    bench = load("memory")
    row = bench.child(_memory_spec())
    for key in (*bench.PARTS, "peak_memory_bytes"):
        assert row[key] > 0, key
    assert row["peak_memory_source"].startswith("cpu_")
    assert row["peak_memory_bytes"] >= sum(row[k] for k in bench.PARTS) - row["saved_activation_bytes"]
    assert row["rank"] == 8 and row["frozen_bytes"] > 0  # SST's U_frozen / Vh_frozen


def test_memory_child_skips_settings_this_version_lacks_or_measures_them():
    import dataclasses

    from sst.config import TrainConfig

    bench = load("memory")
    row = bench.child(_memory_spec(checkpointing=True))
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainConfig)}:
        assert row["saved_activation_bytes"] < bench.child(_memory_spec())["saved_activation_bytes"]
    else:
        assert "train.activation_checkpointing" in row["skipped"]
    assert "method.no_such_key" in bench.child(_memory_spec(overrides=["method.no_such_key=1"]))["skipped"]


def test_memory_benchmark_refuses_a_preset_that_cannot_fit(monkeypatch, tmp_path):
    import sst.sizing
    from sst.errors import ConfigError

    monkeypatch.setattr(sst.sizing, "available_memory", lambda device: (2**30, "MemAvailable"))
    with pytest.raises(ConfigError, match=r"--model llama-1b --micro-batch 1 \(full\): .* GiB"):
        load("memory").main(["--model", "llama-1b", "--methods", "full", "--micro-batch", "1",
                             "--activation-checkpointing", "off", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_memory_what_fits_picks_the_largest_preset_and_micro_batch():
    bench = load("memory")
    gib = 2**30
    parts = lambda state_gib: {"trainable_param_bytes": state_gib * gib // 4, "frozen_bytes": 0,  # noqa: E731
                               "grad_bytes": state_gib * gib // 4, "optimizer_state_bytes": state_gib * gib // 2}
    meta = {"tiny": {**parts(4), "saved_one_sequence": gib, "saved_per_sequence": gib},
            "llama-20m": {**parts(20), "saved_one_sequence": gib, "saved_per_sequence": gib}}
    row = {**parts(4), "micro_batch": 1, "saved_activation_bytes": gib, "peak_memory_bytes": 5 * gib}
    fits = bench.what_fits(meta, row, "tiny")
    # tiny: 4 + B GiB; llama-20m: 20 + B GiB (candidates 1, 2, 4, 8, ...)
    assert fits["best"] == {"16": "tiny x 8", "24": "llama-20m x 4", "80": "llama-20m x 32"}
    doubled = bench.what_fits(meta, {**row, "peak_memory_bytes": 10 * gib}, "tiny")  # peak = 2 x parts
    assert doubled["peak_over_parts"] == 2.0 and doubled["best"]["16"] == "tiny x 4"
    scaled = bench.what_fits(meta, {**row, "saved_activation_bytes": 2 * gib, "peak_memory_bytes": 6 * gib}, "tiny")
    assert scaled["activation_scale"] == 2.0 and scaled["best"]["24"] == "llama-20m x 2"
