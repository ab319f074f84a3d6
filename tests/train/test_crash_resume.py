"""A crash at any file operation of a checkpoint save, then --resume: the run ends as if never
interrupted (losses, final metrics and weights), and a SIGKILLed CLI run resumes the same way."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from faults import Crash, crash, instrument
from runconfigs import tiny_lm_config
from safetensors.torch import load_file

from sst.config import build_config
from sst.train.logging import read_metrics
from sst.train.loop import train

METHOD = {"name": "sst", "rank": 4, "resample_every": 2, "restart_warmup_steps": 1, "round_every": 2}


def _config(out, steps=6):
    return build_config(tiny_lm_config(out, METHOD, steps=steps, save_every=2, eval_every=3))


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir, "train")}


def _same_run(a, b, results_a, results_b):
    assert _losses(a) == _losses(b)
    assert results_a["val_loss"] == results_b["val_loss"]
    wa, wb = load_file(str(a / "last" / "model.safetensors")), load_file(str(b / "last" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    return out, train(_config(out))


def _spread(positions, k=4):
    """`k` positions spread evenly over `positions`, the first and the last included."""
    if len(positions) <= k:
        return list(positions)
    return sorted({positions[round(i * (len(positions) - 1) / (k - 1))] for i in range(k)})


# The default suite crashes at four file operations spread over the save (the first and the last
# among them); `-m slow` crashes at every one. test_checkpoint.py covers every operation of a save
# at the unit level in the default suite.
@pytest.mark.parametrize("where", ["spread", pytest.param("every", marks=pytest.mark.slow)])
def test_a_crash_at_any_file_operation_of_a_save_resumes_exactly(tmp_path, monkeypatch, reference, where):
    ref_dir, ref_results = reference
    # The second save of last/ (step 4) comes after best/ (step 3): find the file operations it
    # spans among all those of the run (config, metrics and results files are written atomically too).
    import sst.train.loop as loop

    count, spans, real = instrument(monkeypatch, 0, crash), [], loop.save_checkpoint

    def save(*args, **kwargs):
        start = count["n"]
        folder = real(*args, **kwargs)
        spans.append((start, count["n"]))
        return folder

    monkeypatch.setattr(loop, "save_checkpoint", save)
    train(_config(tmp_path / "probe"))
    monkeypatch.undo()
    first, last = spans[2]  # last/ at step 2, best/ at step 3, last/ at step 4
    assert last - first >= 10
    positions = list(range(first + 1, last + 1))
    for at in positions if where == "every" else _spread(positions):
        out = tmp_path / f"crash{at}"
        instrument(monkeypatch, at, crash)
        with pytest.raises(Crash):
            train(_config(out))
        monkeypatch.undo()
        results = train(_config(out), resume=True)
        _same_run(ref_dir, out, ref_results, results)
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")], at


def test_a_killed_cli_run_resumes_exactly(tmp_path, reference):
    ref_dir, ref_results = reference
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "sst", "train", "tiny/lm", "--out", str(out), "method.resample_every=2",
            "method.restart_warmup_steps=1", "method.round_every=2", "train.steps=6", "train.save_every=2",
            "train.eval_every=3", "train.eval_batches=2", "train.log_every=1", "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same kernels as this process (conftest)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while not (out / "last").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "last").exists(), proc.stderr.read().decode()
    results = train(build_config({**tiny_lm_config(out, METHOD, steps=6, save_every=2, eval_every=3)}),
                    resume=True)
    _same_run(ref_dir, out, ref_results, results)
