"""The independent full-rank check agrees with the harness at tiny scale, and can disagree."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load():
    spec = importlib.util.spec_from_file_location("baseline_check", ROOT / "benchmarks" / "baseline_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def args(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(words[(i * j) % 10] for j in range(40)) for i in range(200)))
    return ["--config", "tiny/lm", "--lr", "3e-3", "train.steps=8", "train.eval_every=4",
            f"task.data=[{corpus}]", "task.vocab_size=300", "task.seq_len=16", "task.batch_size=4",
            "task.max_train_tokens=0", "--runs", str(root / "runs")]


def test_plain_loop_matches_the_harness(tmp_path, args):
    report = load().main([*args, "--out", str(tmp_path)])
    assert report["agree"] and report["ppl_ratio_plain_over_harness"] == pytest.approx(1.0, abs=0.03)
    assert report["harness"]["val_ppl"] > 1 and (tmp_path / "baseline_check_tiny-lm_ours.md").is_file()


def test_a_handicapped_harness_would_be_caught(tmp_path, monkeypatch, args):
    module = load()
    real = module.plain_run

    def better(config, use_hf):
        result = real(config, use_hf)
        return {**result, "val_ppl": result["val_ppl"] * 0.9}  # as if the harness lost 10%

    monkeypatch.setattr(module, "plain_run", better)
    report = module.main([*args, "--out", str(tmp_path)])
    assert not report["agree"] and "DISAGREE" in (tmp_path / "baseline_check_tiny-lm_ours.md").read_text()
