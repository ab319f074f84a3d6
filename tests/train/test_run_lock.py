"""One `sst train` per run directory: a second one fails at once naming the holder's PID; the lock
goes with its holder (also a killed one) and is released when train() raises."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runconfigs import tiny_lm_config

from sst.checkpoint import CheckpointError
from sst.config import build_config
from sst.train.loop import train
from sst.train.run_lock import LOCK_FILE, RunLock

SRC = str(Path(__file__).resolve().parents[2] / "src")
HOLD = ("import sys, time; sys.path.insert(0, sys.argv[2]); from sst.train.run_lock import RunLock; "
        "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)")


def test_a_second_train_on_a_locked_run_dir_fails_at_once(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out), SRC], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        with pytest.raises(CheckpointError, match=rf"{re.escape(str(out))} is in use by process {holder.pid}"):
            train(build_config(tiny_lm_config(out, steps=2)))
        assert time.monotonic() - start < 2  # before building the task or model
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_FILE).exists()  # a killed holder leaves its file, but not its lock
    train(build_config(tiny_lm_config(out, steps=2)))
    assert not (out / LOCK_FILE).exists() and (out / "results.json").is_file()


def test_the_lock_is_released_when_train_raises(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(build_config(tiny_lm_config(out, steps=2)), resume=True)
    assert not out.exists()  # created for the lock only, and removed with it
    with RunLock(out):  # free again
        assert (out / LOCK_FILE).read_text().strip().isdigit()
    with RunLock(out), pytest.raises(CheckpointError, match="in use by process"):
        RunLock(out).acquire()  # a second holder, even in the same process
