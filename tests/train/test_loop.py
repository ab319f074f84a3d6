import json

import pytest
import torch
from runconfigs import tiny_lm_config

from sst.config import build_config
from sst.checkpoint import CheckpointError
from sst.train.logging import read_metrics
from sst.train.loop import NonFiniteLossError, train


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir, "train")}


@pytest.mark.parametrize("method", [
    {"name": "sst", "rank": 4, "resample_every": 3, "restart_warmup_steps": 2, "round_every": 2},
    {"name": "relora", "rank": 4, "reset_every": 3},
    {"name": "galore", "rank": 4, "proj_update_every": 3},
])
def test_resume_continues_exactly(tmp_path, method):
    full = train(build_config(tiny_lm_config(tmp_path / "full", method, steps=8)))
    # interrupt the 8-step run right after its step-5 checkpoint, then resume it
    cfg = build_config(tiny_lm_config(tmp_path / "split", method, steps=8, save_every=5))
    import sst.train.loop as loop

    calls = {"n": 0}
    original = loop.save_checkpoint

    def crash_after_first_save(*args, **kwargs):
        out = original(*args, **kwargs)
        if str(args[0]).endswith("last"):
            calls["n"] += 1
            raise KeyboardInterrupt
        return out

    loop.save_checkpoint = crash_after_first_save
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    finally:
        loop.save_checkpoint = original
    assert calls["n"] == 1
    resumed = train(cfg, resume=True)
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert sorted(b) == list(range(1, 9))
    for step in range(6, 9):
        assert a[step] == b[step], (step, a[step], b[step])
    assert resumed["val_loss"] == full["val_loss"]


def test_gradient_accumulation_triggers_method_events_per_optimizer_step(tmp_path):
    method = {"name": "sst", "rank": 4, "resample_every": 2, "restart_warmup_steps": 0}
    train(build_config(tiny_lm_config(tmp_path, method, steps=6, grad_accum=3)))
    events = [r for r in read_metrics(tmp_path, "train") if "resampled" in r]
    assert [r["step"] for r in events] == [2, 4, 6]


def test_refuses_to_overwrite_and_checks_config_on_resume(tmp_path):
    cfg = tiny_lm_config(tmp_path, steps=2)
    train(build_config(cfg))
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        train(build_config(cfg))
    other = tiny_lm_config(tmp_path, {"name": "sst", "rank": 2}, steps=2)
    with pytest.raises(CheckpointError, match=r"another configuration: \['method.rank'"):
        train(build_config(other), resume=True)
    # "auto" returns the finished run's results without training again
    assert train(build_config(cfg), resume="auto")["steps"] == 2


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    cfg = tiny_lm_config(tmp_path, steps=2)
    train(build_config(cfg))
    (tmp_path / "results.json").unlink()  # unfinished, as if it had crashed after its last checkpoint
    weights = tmp_path / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors: truncated or corrupt"):
        train(build_config(cfg), resume=True)
    weights.write_bytes((tmp_path / "best" / "model.safetensors").read_bytes())
    (tmp_path / "last" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"state.pt: cannot be read"):
        train(build_config(cfg), resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = build_config(tiny_lm_config(tmp_path, steps=6, save_every=2, lr=1e-3))
    import sst.build as build

    original = build.build_task

    def poisoned(*args):
        task = original(*args)
        real_loss = task.loss

        def loss(model, batch):
            value, units = real_loss(model, batch)
            return (value * float("nan") if task._calls >= 3 else value), units

        task._calls = 0
        real_batch = task.train_batch

        def train_batch(index):
            task._calls = index
            return real_batch(index)

        task.loss, task.train_batch = loss, train_batch
        return task

    build.build_task = poisoned
    try:
        with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 4 .*last good checkpoint"):
            train(cfg)
    finally:
        build.build_task = original
    saved = torch.load(tmp_path / "last" / "state.pt", weights_only=True)
    assert saved["loop"]["step"] == 2


def test_results_file_has_the_comparison_fields(tmp_path):
    results = train(build_config(tiny_lm_config(tmp_path, steps=2)))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    for key in ("method", "rank", "val_loss", "val_ppl", "trainable_params", "total_params",
                "optimizer_state_bytes", "peak_memory_bytes", "tokens_per_second", "svd_seconds",
                "train_seconds"):
        assert key in on_disk
    assert on_disk["val_ppl"] == pytest.approx(torch.tensor(results["val_loss"]).exp().item(), rel=1e-6)
    assert 0 < on_disk["trainable_params"] < on_disk["total_params"]


def _all_finite(state):
    tensors = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            tensors.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(state)
    return all(bool(t.isfinite().all()) for t in tensors if t.is_floating_point())


@pytest.mark.parametrize("method", ["sst", "relora", "galore"])
def test_a_diverging_run_stops_cleanly_and_keeps_a_finite_checkpoint(tmp_path, method):
    from safetensors.torch import load_file

    # lr 1e8 * step / 1000: the first steps still give a finite loss (lr 1e6 from step 1 leaves no
    # checkpoint whose weights do)
    cfg = build_config(tiny_lm_config(tmp_path, {"name": method, "rank": 4}, steps=30, lr=1e8,
                                      save_every=1, warmup_steps=1000))
    with pytest.raises(NonFiniteLossError, match=r"at step \d+ .*the last good checkpoint .* is kept"):
        train(cfg)
    kept = tmp_path / "last"
    assert _all_finite(load_file(str(kept / "model.safetensors")))
    assert _all_finite(torch.load(kept / "state.pt", weights_only=True))


def test_non_finite_spectral_tensors_are_caught_before_resampling(tmp_path, monkeypatch):
    from sst.methods.sst import SSTMethod

    cfg = build_config(tiny_lm_config(tmp_path, steps=8, save_every=1))
    real = SSTMethod.after_step

    def poisoned(self, model, optimizer, step):
        if step == 3:  # as if the optimizer step had overflowed a singular value
            next(iter(self.layers(model))).S.data[0] = float("inf")
        return real(self, model, optimizer, step)

    monkeypatch.setattr(SSTMethod, "after_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"diverged at step 3: 1 of \d+ singular-value"):
        train(cfg)
    assert torch.load(tmp_path / "last" / "state.pt", weights_only=True)["loop"]["step"] == 2


def test_a_non_finite_state_never_replaces_the_last_good_checkpoint(tmp_path, monkeypatch):
    import sst.train.loop as loop

    cfg = build_config(tiny_lm_config(tmp_path, {"name": "full"}, steps=4, save_every=2))
    real = loop.train_step

    def step(run, batch_for=None):
        result = real(run, batch_for)
        if run.state.step == 3:
            next(run.model.parameters()).data[0] = float("nan")  # finite loss, poisoned weights
        return result

    monkeypatch.setattr(loop, "train_step", step)
    with pytest.raises(NonFiniteLossError, match="parameters or optimizer state are not finite at step 4"):
        train(cfg)
    assert torch.load(tmp_path / "last" / "state.pt", weights_only=True)["loop"]["step"] == 2
