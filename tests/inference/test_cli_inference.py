"""`sst eval | prune | generate | export` end to end on a tiny trained run."""

from __future__ import annotations

import json

import pytest

from sst.cli import main


def test_eval_prints_the_metrics(sst_run, capsys):
    assert main(["eval", str(sst_run), "--max-batches", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoint"].endswith("best") and out["val_loss"] > 0 and out["val_tokens"] == 32
    assert main(["eval", str(sst_run / "last"), "--split", "test", "--max-batches", "1"]) == 2
    assert "the lm task has only a 'val' split" in capsys.readouterr().err


def test_prune_writes_the_study(sst_run, tmp_path, capsys):
    assert main(["prune", str(sst_run), "--ratios", "0,0.5", "--out", str(tmp_path), "--max-batches", "1"]) == 0
    assert "val_ppl" in capsys.readouterr().out
    saved = json.loads((tmp_path / "prune.json").read_text())
    assert [p["ratio"] for p in saved["points"]] == [0.0, 0.5]
    assert (tmp_path / "prune.png").is_file()


def test_prune_rejects_bad_ratios(sst_run, capsys):
    with pytest.raises(SystemExit):
        main(["prune", str(sst_run), "--ratios", "0,1.2"])
    assert "[0, 1)" in capsys.readouterr().err


def test_generate_prints_prompt_and_continuation(sst_run, capsys):
    assert main(["generate", str(sst_run), "--prompt", "the model", "--max-new-tokens", "4"]) == 0
    greedy = capsys.readouterr().out
    assert greedy.startswith("the model")
    assert main(["generate", str(sst_run), "--prompt", "the model", "--max-new-tokens", "4",
                 "--top-k", "5", "--temperature", "0.8", "--seed", "2"]) == 0
    assert capsys.readouterr().out.startswith("the model")


def test_export_formats(sst_run, tmp_path, capsys):
    assert main(["export", str(sst_run), "--out", str(tmp_path / "dense")]) == 0
    assert (tmp_path / "dense" / "model.safetensors").is_file()
    assert main(["export", str(sst_run), "--out", str(tmp_path / "low"), "--format", "lowrank", "--energy", "0.9"]) == 0
    ranks = json.loads((tmp_path / "low" / "lowrank.json").read_text())
    assert len(ranks) == 14 and all(0 < r["rank"] <= 64 and r["energy_kept"] >= 0.9 for r in ranks.values())
    info = json.loads((tmp_path / "low" / "export.json").read_text())
    assert info["format"] == "lowrank" and info["energy"] == 0.9 and info["method"] == "sst"


def test_errors_exit_with_status_2(sst_run, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "absent")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["export", str(sst_run), "--out", str(tmp_path / "y"), "--format", "lowrank"]) == 2
    assert "--ratio or --energy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(sst_run), "--out", str(tmp_path / "z"), "--ratio", "0.5", "--energy", "0.9"])
