"""The memory check before allocation: meta-device estimates equal the real model's bytes, deep
models are extrapolated exactly, and what cannot fit is refused fast with the numbers."""

from __future__ import annotations

import time

import pytest
import torch

import sst.sizing
from sst.build import build_run
from sst.config import load_config
from sst.errors import ConfigError
from sst.models.recompute import apply_activation_checkpointing
from sst.sizing import MemoryEstimate, check_fits, estimate_training_memory
from sst.tasks import build_task

GIB = 2**30
CPU = torch.device("cpu")


def task_and_method(tmp_path, *overrides):
    config = load_config("tiny/lm", list(overrides))
    return build_task(config.task, config.seed, tmp_path), config


def real_bytes(tmp_path, *overrides) -> tuple[int, int, int]:
    """(parameter, trainable, buffer) bytes of the model build_run really allocates."""
    config = load_config("tiny/lm", list(overrides))
    model = build_run(config, tmp_path, training=False).model
    size = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    params = list(model.parameters())
    return size(params), size(p for p in params if p.requires_grad), size(model.buffers())


@pytest.mark.parametrize("method", ["full", "lora", "sst"])
def test_meta_estimate_equals_the_real_model(tmp_path, method):
    task, config = task_and_method(tmp_path, f"method.name={method}")
    estimate = estimate_training_memory(task, config.method)
    params, trainable, buffers = real_bytes(tmp_path, f"method.name={method}")
    assert (estimate.parameters, estimate.gradients, estimate.buffers) == (params, trainable, buffers)
    assert estimate.optimizer == 2 * trainable  # two AdamW moments
    assert estimate.activations > 0


@pytest.mark.parametrize("recompute", [False, True])
def test_deep_models_are_extrapolated_exactly(tmp_path, monkeypatch, recompute):
    monkeypatch.setattr(sst.sizing, "PROBE_LAYERS", 2)  # 5 layers: measured at 1 and 2
    task, config = task_and_method(tmp_path, "task.n_layers=5")
    estimate = estimate_training_memory(task, config.method, activation_checkpointing=recompute)
    params, trainable, buffers = real_bytes(tmp_path, "task.n_layers=5")
    assert (estimate.parameters, estimate.gradients, estimate.buffers) == (params, trainable, buffers)
    monkeypatch.setattr(sst.sizing, "PROBE_LAYERS", 16)  # the same model measured whole
    whole = estimate_training_memory(task, config.method, activation_checkpointing=recompute)
    assert whole.activations == estimate.activations


def real_saved_bytes(task, model, batch) -> int:
    """Bytes of the distinct storages a real CPU forward saves for backward (no parameters/buffers)."""
    owned = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in owned:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = task.loss(model, batch)
    loss.backward()
    return sum(saved.values())


@pytest.mark.parametrize("method", ["full", "sst"])
def test_checkpointing_estimate_is_below_the_plain_one_and_bounds_the_real_bytes(tmp_path, method):
    overrides = [f"method.name={method}"]
    task, config = task_and_method(tmp_path, "task.n_layers=4", *overrides)
    plain = estimate_training_memory(task, config.method)
    recomputed = estimate_training_memory(task, config.method, activation_checkpointing=True)
    assert recomputed.state == plain.state
    batch = task.train_batch(0)
    real = {}
    for n_layers in (3, 4):
        model = build_run(load_config("tiny/lm", [f"task.n_layers={n_layers}", *overrides]), tmp_path,
                          training=False).model.train()
        real[n_layers] = real_saved_bytes(task, model, batch)
    apply_activation_checkpointing(model)
    real_recomputed = real_saved_bytes(task, model, batch)
    one_block = real[4] - real[3]  # what a block saves, alive again while it is recomputed
    assert 0 < real_recomputed < real[4] and one_block > 0
    # an upper bound of the peak (what stays saved + one block's replay), far below the plain run's
    assert real_recomputed + one_block <= recomputed.activations < plain.activations
    assert recomputed.activations < real_recomputed + 2 * one_block  # one replay counted, not several


def test_activations_grow_linearly_with_the_batch(tmp_path):
    a4, a8, a16 = (estimate_training_memory(*_pair(tmp_path, f"task.batch_size={b}")) for b in (4, 8, 16))
    assert a4.state == a8.state == a16.state
    per_sequence = (a8.activations - a4.activations) / 4
    assert per_sequence > 0 and a16.activations - a8.activations == 8 * per_sequence


def _pair(tmp_path, *overrides):
    task, config = task_and_method(tmp_path, *overrides)
    return task, config.method


def test_a_million_layers_is_refused_fast_with_the_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(sst.sizing, "available_memory", lambda device: (16 * GIB, "test"))
    task, config = task_and_method(tmp_path, "task.n_layers=1000000")
    task.train_batch(0)  # data loaded: what is timed is the check itself
    estimate_training_memory(*_pair(tmp_path))  # and torch's meta kernels are imported
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"^task: the model would need ~[\d,.]+ GiB for parameters, "
                                          r"gradients and optimizer state, but 16.0 GiB are available"):
        sst.sizing.check_training_memory(task, config.method, CPU)
    assert time.perf_counter() - start < 1.0


def test_build_run_refuses_before_building_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(sst.sizing, "available_memory", lambda device: (16 * GIB, "test"))
    built = []
    config = load_config("tiny/lm", ["task.n_layers=1000000"])
    from sst.tasks.lm import LMTask

    original = LMTask.build_model
    monkeypatch.setattr(LMTask, "build_model", lambda self: built.append(original(self)) or built[-1])
    with pytest.raises(ConfigError, match="GiB for parameters"):
        build_run(config, tmp_path / "run")
    assert all(next(m.parameters()).is_meta for m in built)  # only shape-only probes were built


def test_activations_that_cannot_fit_name_the_batch_keys(tmp_path, monkeypatch):
    task, config = task_and_method(tmp_path)
    estimate = estimate_training_memory(task, config.method)
    room = estimate.state + estimate.activations // 2  # the state fits, one micro-batch does not
    monkeypatch.setattr(sst.sizing, "available_memory", lambda device: (room, "test"))
    with pytest.raises(ConfigError, match=r"^task.batch_size/task.seq_len: one micro-batch would need"):
        check_fits(estimate, CPU, task.config)
    monkeypatch.setattr(sst.sizing, "available_memory", lambda device: (estimate.total, "test"))
    check_fits(estimate, CPU, task.config)  # exactly enough is enough


def test_checkpointing_fits_what_the_plain_run_cannot(tmp_path, monkeypatch):
    task, config = task_and_method(tmp_path, "task.n_layers=4")
    plain = estimate_training_memory(task, config.method)
    recomputed = estimate_training_memory(task, config.method, activation_checkpointing=True)
    room = plain.state + (plain.activations + recomputed.activations) // 2
    monkeypatch.setattr(sst.sizing, "available_memory", lambda device: (room, "test"))
    with pytest.raises(ConfigError, match=r"^task.batch_size/task.seq_len: one micro-batch would need"):
        build_run(load_config("tiny/lm", ["task.n_layers=4"]), tmp_path / "off")
    on = build_run(load_config("tiny/lm", ["task.n_layers=4", "train.activation_checkpointing=true"]), tmp_path / "on")
    assert len(on.model.layers) == 4


def test_switch_off_and_unknown_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(sst.sizing, "available_memory", lambda device: (1, "test"))
    task, config = task_and_method(tmp_path)
    monkeypatch.setenv("SST_NO_MEMORY_CHECK", "1")
    assert sst.sizing.check_training_memory(task, config.method, CPU) is None
    monkeypatch.setattr(sst.sizing, "available_memory", lambda device: None)
    check_fits(MemoryEstimate(10**15, 0, 0, 0, 0), CPU, task.config)  # nothing known: no refusal


def test_no_estimate_when_the_model_cannot_be_built_on_meta(tmp_path, monkeypatch):
    task, config = task_and_method(tmp_path)

    def needs_values(self):
        raise NotImplementedError("this constructor computes with values")

    monkeypatch.setattr(type(task), "build_model", needs_values)
    assert estimate_training_memory(task, config.method) is None


def test_the_estimate_leaves_the_global_rng_alone(tmp_path):
    task, config = task_and_method(tmp_path)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    estimate_training_memory(task, config.method)
    assert torch.equal(torch.get_rng_state(), before)


def test_available_memory_on_the_cpu_is_a_positive_number():
    from sst.devices import available_memory

    free, source = available_memory(CPU)
    assert free > 0 and source in ("MemAvailable", "cgroup limit")


def test_fsdp_shares_the_state_between_ranks():
    whole = MemoryEstimate(parameters=101, gradients=50, optimizer=100, buffers=7, activations=40)
    half = whole.sharded(2)
    assert (half.parameters, half.gradients, half.optimizer, half.buffers) == (51, 25, 50, 4)
    assert half.activations == whole.activations  # each rank runs its own micro-batch
    assert whole.sharded(1) == whole
