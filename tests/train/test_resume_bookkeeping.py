"""What a resume keeps: metrics.jsonl without torn lines or duplicates and with the same train
averages, the final step's checkpoint before its evaluation, a finished run left untouched, a
diverged run resumed with a lower lr (recorded), and checkpoints by time."""

import json
import re
import shutil

import pytest
import torch
import yaml
from runconfigs import timeless_records, tiny_lm_config

from sst.cli import main
from sst.config import build_config
from sst.train.logging import RunWarning, read_metrics
from sst.train.loop import NonFiniteLossError, train


class Crash(BaseException):
    """Stands for the process dying there."""


def _config(out, **train):
    # log_every=3 does not divide save_every=4; eval_every=4 puts an evaluation right after a save.
    return build_config(tiny_lm_config(out, steps=8, log_every=3, save_every=4, eval_every=4, **train))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    return out, train(_config(out))


def _crash_in(monkeypatch, name, when):
    import sst.train.loop as loop

    real = getattr(loop, name)

    def wrapper(run, *args, **kwargs):
        if when(run):
            raise Crash
        return real(run, *args, **kwargs)

    monkeypatch.setattr(loop, name, wrapper)


def test_a_torn_metrics_line_is_dropped_and_logs_match_the_uninterrupted_run(tmp_path, monkeypatch, reference):
    ref_dir, ref_results = reference
    _crash_in(monkeypatch, "train_step", lambda run: run.state.step == 5)  # after step 4: save, then eval
    with pytest.raises(Crash):
        train(_config(tmp_path))
    monkeypatch.undo()
    assert [(r["step"], r["kind"]) for r in read_metrics(tmp_path)] == [(3, "train"), (4, "eval")]
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "kind": "train", "loss": 6.1')  # what a crash mid-write leaves
    with pytest.warns(RunWarning, match=r"dropped 1 torn or corrupt line\(s\) \(line 3\)"):
        results = train(_config(tmp_path), resume=True)
    # the evaluation at step 4 (after the checkpoint) is logged once; the record at step 6 averages
    # steps 4-6 although step 4 was trained before the resume
    assert timeless_records(tmp_path) == timeless_records(ref_dir)
    assert results["val_loss"] == ref_results["val_loss"] and results["best_step"] == ref_results["best_step"]


@pytest.mark.parametrize("where", ["evaluate", "finish"])
def test_the_final_checkpoint_comes_before_the_final_evaluation(tmp_path, monkeypatch, reference, where):
    ref_dir, ref_results = reference
    _crash_in(monkeypatch, where, lambda run: run.state.step == 8)
    with pytest.raises(Crash):
        train(_config(tmp_path))
    monkeypatch.undo()
    assert torch.load(tmp_path / "last" / "state.pt", weights_only=True)["loop"]["step"] == 8
    results = train(_config(tmp_path), resume=True)  # evaluates step 8 (again, for "finish") and finishes
    assert timeless_records(tmp_path) == timeless_records(ref_dir)  # one eval record at step 8, one final record
    for key in ("val_loss", "best_step", "steps", "loss_history"):
        assert results[key] == ref_results[key], key


def test_resume_of_a_finished_run_returns_its_results_and_changes_nothing(tmp_path, reference, capsys):
    ref_dir, ref_results = reference
    run = tmp_path / "done"
    shutil.copytree(ref_dir, run, symlinks=True)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.warns(RunWarning, match=r"is finished \(step 8, results.json\); nothing changed"):
        assert train(_config(run), resume=True) == json.loads((ref_dir / "results.json").read_text())
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(tiny_lm_config(run, steps=8, log_every=3, save_every=4, eval_every=4)))
    assert main(["train", str(config_file), "--resume"]) == 0
    assert "sst: warning: " in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert [r["kind"] for r in read_metrics(run)].count("final") == 1


def test_a_diverged_run_resumes_from_its_last_finite_step_with_a_lower_lr(tmp_path):
    # lr 1e8 * step / 1000: diverges within a few steps, after some that give a finite loss
    diverging = tiny_lm_config(tmp_path, steps=10, lr=1e8, warmup_steps=1000, save_every=1)
    with pytest.raises(NonFiniteLossError, match=r"at step (\d+) .* the checkpoint of step \d+ gives the same on "
                       r"resume and was removed; the last good checkpoint .*last \(step \d+\) is kept") as caught:
        train(build_config(diverging))
    failed, dropped, kept = map(int, re.findall(r"step (\d+)", str(caught.value)))
    assert dropped == failed - 1 and kept == dropped - 1  # the weights of step `dropped` gave the NaN
    assert torch.load(tmp_path / "last" / "state.pt", weights_only=True)["loop"]["step"] == kept
    calmer = {**diverging, "train": {**diverging["train"], "lr": 1e-4, "warmup_steps": 4}}
    with pytest.warns(RunWarning) as warned:
        results = train(build_config(calmer), resume=True)
    assert [str(w.message).split(" (")[0] for w in warned] == [
        f"train.lr changed on resume at step {kept}: 100000000.0 -> 0.0001",
        f"train.warmup_steps changed on resume at step {kept}: 1000 -> 4"]
    assert results["steps"] == 10 and torch.isfinite(torch.tensor(results["val_loss"]))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in read_metrics(tmp_path, "train"))
    history = [json.loads(line) for line in (tmp_path / "config_history.jsonl").read_text().splitlines()]
    assert history == [{"step": kept, "key": "train.lr", "old": 1e8, "new": 1e-4},
                       {"step": kept, "key": "train.warmup_steps", "old": 1000, "new": 4}]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["lr"] == 1e-4


def test_a_run_whose_only_checkpoint_diverges_keeps_none_and_may_start_again(tmp_path):
    from sst.checkpoint import find_checkpoint
    from sst.train.loop import resolve_resume

    config = build_config(tiny_lm_config(tmp_path, steps=8, lr=1e6, warmup_steps=0, save_every=1))
    with pytest.raises(NonFiniteLossError, match=r"at step 2 .*the checkpoint of step 1 gives the same on resume "
                       r"and was removed; no usable checkpoint remains. Start again"):
        train(config)
    assert find_checkpoint(tmp_path / "last") is None
    assert resolve_resume(config, False).checkpoint is None  # a new run is not refused


@pytest.mark.parametrize(("minutes", "saved"), [(1e-9, [1, 2, 3, 4]), (10.0, [4])])
def test_checkpoints_by_time(tmp_path, monkeypatch, minutes, saved):
    import sst.train.loop as loop

    steps, real = [], loop.save_last

    def save_last(run):
        steps.append(run.state.step)
        real(run)

    monkeypatch.setattr(loop, "save_last", save_last)
    train(build_config(tiny_lm_config(tmp_path, steps=4, save_every=0, save_every_minutes=minutes)))
    assert steps == saved
