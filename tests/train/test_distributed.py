"""DDP on CPU (gloo): two processes on half-batches equal one process accumulating both halves."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from runconfigs import tiny_lm_config
from safetensors.torch import load_file

from sst.config import build_config
from sst.train.loop import train

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.mark.parametrize("method", [
    {"name": "sst", "rank": 4, "resample_every": 2, "restart_warmup_steps": 1, "round_every": 2},
    {"name": "relora", "rank": 4, "reset_every": 2},
])
def test_ddp_matches_single_process_on_the_same_global_batch(tmp_path, method):
    steps = 4
    single = tiny_lm_config(tmp_path / "single", method, steps=steps, grad_accum=2)
    train(build_config(single))

    ddp = tiny_lm_config(tmp_path / "ddp", method, steps=steps, grad_accum=1)
    config_file = tmp_path / "ddp.yaml"
    config_file.write_text(yaml.safe_dump(ddp))
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sst", "train", str(config_file)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a = load_file(str(tmp_path / "single" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
        else:  # the sampled active sets are identical on every rank and in the single run
            assert torch.equal(a[key], b[key]), key
