"""FSDP2 on CPU (gloo): sharded training equals one process on the same global batch, resumes
exactly from its sharded checkpoints (also with another world size), and halves SST's memory.

Global batch: 2 processes x 1 micro-batch read micro-batches (2s, 2s + 1) at step s, as 1 process
x 2 micro-batches does. Gradient clipping is off where equality must be exact: the sharded
gradient norm sums its squares in another order (one ulp), which SST's re-SVDs can amplify.
"""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from runconfigs import timeless_records, tiny_lm_config

from safetensors.torch import load_file

from sst.checkpoint import CheckpointError
from sst.config import build_config
from sst.inference.loading import load_run
from sst.train.loop import train

SST = {"name": "sst", "rank": 4, "resample_every": 2, "restart_warmup_steps": 1, "round_every": 2}
METHODS = {
    "relora": {"name": "relora", "rank": 4, "reset_every": 3},
    "galore": {"name": "galore", "rank": 4, "proj_update_every": 3},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, config: dict, resume: bool) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        train(build_config(config), resume=resume)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def run_fsdp(config: dict, world: int, resume: bool = False) -> None:
    """Train ``config`` with train.parallelism=fsdp in ``world`` fresh processes."""
    config = {**config, "train": {**config["train"], "parallelism": "fsdp"}}
    mp.start_processes(_worker, args=(world, _free_port(), config, resume), nprocs=world, start_method="spawn")


def config(out, method=SST, steps=8, world=1, **train_keys):
    """A tiny LM run whose global batch is 2 micro-batches however many processes share it."""
    # a constant schedule: a run stopped at step 4 and resumed for 8 has the same lr at every step
    run = tiny_lm_config(out, method, steps=steps, grad_accum=2 // world, save_every=4, schedule="constant",
                         **train_keys)
    run["task"]["val_fraction"] = 0.005  # a small final evaluation
    return run


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in timeless_records(run_dir) if "loss" in r]


def results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_fsdp_sst_matches_single_process_and_halves_memory(tmp_path):
    """8 steps spanning re-samples (every 2) and re-SVDs (rounds of 2 iterations, staggered)."""
    train(build_config(config(tmp_path / "single", grad_clip=0.0)))
    run_fsdp(config(tmp_path / "fsdp", world=2, grad_clip=0.0), world=2)

    single, sharded = losses(tmp_path / "single"), losses(tmp_path / "fsdp")
    assert len(sharded) == len(single) == 8
    torch.testing.assert_close(sharded, single, rtol=1e-6, atol=1e-6)
    events = [r for r in timeless_records(tmp_path / "fsdp") if r.get("resvd")]
    assert events, "no re-SVD happened in the compared steps"
    # the sharded checkpoint, read whole by inference, holds the single run's weights
    model = load_run(tmp_path / "fsdp" / "last").model
    reference = load_file(str(tmp_path / "single" / "last" / "model.safetensors"))
    assert model.state_dict().keys() == reference.keys()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=1e-5, atol=1e-6, msg=key)
    one, two = results(tmp_path / "single"), results(tmp_path / "fsdp")
    assert two["world_size"] == 2 and two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)
    # Rank 0's share: every parameter, its moments and SST's frozen factors are halved (the
    # rank with the larger half of an odd-sized tensor reports it; small 1-D tensors round up).
    for key in ("param_bytes", "optimizer_state_bytes"):
        assert 0.45 < two[key] / one[key] < 0.55, (key, two[key], one[key])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS))
def test_fsdp_matches_single_process(tmp_path, name):
    """With gradient clipping on (the default): equal within float tolerance."""
    train(build_config(config(tmp_path / "single", METHODS[name], steps=10)))
    run_fsdp(config(tmp_path / "fsdp", METHODS[name], steps=10, world=2), world=2)
    sharded = losses(tmp_path / "fsdp")
    assert len(sharded) == 10
    torch.testing.assert_close(sharded, losses(tmp_path / "single"), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_fsdp_resume_equals_uninterrupted(tmp_path):
    run_fsdp(config(tmp_path / "whole", world=2, grad_clip=0.0), world=2)
    run_fsdp(config(tmp_path / "resumed", steps=4, world=2, grad_clip=0.0), world=2)
    assert (tmp_path / "resumed" / "last" / "shards").is_dir()
    run_fsdp(config(tmp_path / "resumed", world=2, grad_clip=0.0), world=2, resume=True)
    train_records = [r for r in timeless_records(tmp_path / "resumed") if r["kind"] == "train"]
    assert train_records == [r for r in timeless_records(tmp_path / "whole") if r["kind"] == "train"]
    assert len(train_records) == 8
    assert results(tmp_path / "resumed")["val_loss"] == results(tmp_path / "whole")["val_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_fsdp_reshards_on_resume(tmp_path, before, after):
    """Saved by ``before`` processes, resumed by ``after`` (grad_accum keeps the global batch):
    the run continues as the single-process run does."""
    train(build_config(config(tmp_path / "single", grad_clip=0.0)))
    run_fsdp(config(tmp_path / "run", steps=4, world=before, grad_clip=0.0), world=before)
    run_fsdp(config(tmp_path / "run", world=after, grad_clip=0.0), world=after, resume=True)
    resumed = losses(tmp_path / "run")
    assert len(resumed) == 8
    torch.testing.assert_close(resumed, losses(tmp_path / "single"), rtol=1e-6, atol=1e-6)
    history = [json.loads(line) for line in (tmp_path / "run" / "config_history.jsonl").read_text().splitlines()]
    assert history == [{"step": 4, "key": "train.grad_accum", "old": 2 // before, "new": 2 // after}]


@pytest.mark.slow
def test_fsdp_shards_hugging_face_blocks(tmp_path):
    """A Hugging Face LLaMA: its decoder layers are the sharded blocks; SST trains as on one process."""
    pytest.importorskip("transformers")
    runs = {}
    for name, world in (("single", 1), ("fsdp", 2)):
        runs[name] = config(tmp_path / name, world=world, grad_clip=0.0)
        runs[name]["task"].update(model="hf:llama-tiny", d_ff=96)
    train(build_config(runs["single"]))
    run_fsdp(runs["fsdp"], world=2)
    sharded = losses(tmp_path / "fsdp")
    assert len(sharded) == 8
    torch.testing.assert_close(sharded, losses(tmp_path / "single"), rtol=1e-6, atol=1e-6)


def test_resuming_with_another_parallelism_is_refused_in_one_line(tmp_path):
    run = config(tmp_path, steps=2)
    train(build_config(run))
    run["train"]["parallelism"] = "fsdp"
    try:
        with pytest.raises(CheckpointError, match=r"\['train.parallelism'\] differ"):
            train(build_config(run), resume=True)
    finally:  # fsdp opened a one-process group in this process
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
