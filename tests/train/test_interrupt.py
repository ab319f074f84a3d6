"""SIGINT and SIGTERM end a run after its current step with a checkpoint, a one-line message and
exit code 128 + signal; the resumed run equals the uninterrupted one. A second Ctrl-C stops at once."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

import yaml
from runconfigs import timeless_records, tiny_lm_config

from sst.config import build_config, load_config
from sst.train.interrupt import StopSignals, TrainingInterrupted
from sst.train.logging import read_metrics
from sst.train.loop import train

# log_every=3 does not divide the step a signal lands on: the first record after the resume must
# still average over the steps before it (the loss window is part of the checkpoint).
OVERRIDES = ["train.steps=30", "train.log_every=3", "train.eval_every=4", "train.eval_batches=2",
             "train.save_every=0", "train.progress=false"]


def _config(out):
    return load_config("tiny/lm", [*OVERRIDES, f"out_dir={out}"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    return out, train(_config(out))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signalled_cli_run_saves_exits_and_resumes_exactly(tmp_path, reference, signum):
    ref_dir, ref_results = reference
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sst", "train", "tiny/lm", "--out", str(out), *OVERRIDES]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same kernels as this process (conftest)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + 120
    while not read_metrics(out, "train") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # signal once the first train record (step 3) is out
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    last = stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"sst: interrupted at step (\d+); checkpoint (\S+) written; resume with --resume", last)
    assert match, stderr
    step = int(match.group(1))
    assert 3 <= step < 30 and match.group(2) == str(out / "last")
    assert "Traceback" not in stderr and stdout == ""
    assert torch.load(out / "last" / "state.pt", weights_only=True)["loop"]["step"] == step

    results = train(_config(out), resume=True)
    # train losses (windows across the resume), evaluations and the final record
    assert timeless_records(out) == timeless_records(ref_dir)
    assert results["val_loss"] == ref_results["val_loss"] and results["loss_history"] == ref_results["loss_history"]
    a, b = load_file(str(ref_dir / "last" / "model.safetensors")), load_file(str(out / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_signal_during_train_stops_after_the_step_and_restores_the_handlers(tmp_path, monkeypatch):
    import sst.train.loop as loop

    real = loop.train_step

    def step(run, batch_for=None):
        result = real(run, batch_for)
        if run.state.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-loop, as from a scheduler
        return result

    monkeypatch.setattr(loop, "train_step", step)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 2; checkpoint .* written") as caught:
        train(_config(tmp_path))
    assert caught.value.exit_code == 143 and caught.value.step == 2
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert torch.load(tmp_path / "last" / "state.pt", weights_only=True)["loop"]["step"] == 2


def test_a_second_ctrl_c_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT  # the first only asks
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGINT  # the first request stands
        with pytest.raises(KeyboardInterrupt, match="second interrupt"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode boundary
    assert signal.getsignal(signal.SIGINT) is before


def test_handlers_are_installed_only_in_the_main_thread():
    seen = {}

    def worker():
        with StopSignals() as stop:
            seen["handler"] = signal.getsignal(signal.SIGTERM)
            seen["signum"] = stop.signum

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"handler": before, "signum": None}


def _worker_of_rank(parent: int, rank: int) -> int | None:
    """The pid of torchrun worker ``rank`` among the descendants of ``parent`` (Linux /proc)."""
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            parents[int(entry)] = int(re.search(r"PPid:\s+(\d+)", open(f"/proc/{entry}/status").read()).group(1))
        except (OSError, AttributeError):
            continue
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, parent):
            ancestor = parents.get(ancestor)
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if ancestor == parent and f"RANK={rank}".encode() in environ:
            return pid
    return None


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker through /proc")
def test_under_ddp_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    out = tmp_path / "ddp"
    config = tiny_lm_config(out, steps=40, log_every=1, eval_every=10)
    config_file = tmp_path / "ddp.yaml"
    config_file.write_text(yaml.safe_dump(config))
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sst", "train", str(config_file)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not read_metrics(out, "train") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = _worker_of_rank(proc.pid, 1)
    assert worker is not None
    os.kill(worker, signal.SIGTERM)  # rank 1 only: rank 0 must stop at the same step, not hang
    _, stderr = proc.communicate(timeout=300)
    steps = [int(s) for s in re.findall(r"sst: interrupted at step (\d+)", stderr)]
    assert len(steps) == 2 and steps[0] == steps[1], stderr[-3000:]  # each rank says so
    step = steps[0]
    assert torch.load(out / "last" / "state.pt", weights_only=True)["loop"]["step"] == step < 40
    assert train(build_config({**config, "train": {**config["train"], "steps": step + 2}}), resume=True)["steps"] \
        == step + 2
