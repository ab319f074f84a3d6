"""Memory accounting: the measured CPU peak is accurate, the breakdown and the saved-activation
meter count exactly what they name, and a tiny run writes positive memory fields."""

import json
from pathlib import Path

import pytest
import torch
from runconfigs import tiny_lm_config
from torch import nn

from sst.config import build_config
from sst.train import memory
from sst.train.loop import train
from sst.train.memory import memory_report, peak_memory_bytes, peak_memory_source, reset_peak, saved_activations

CPU = torch.device("cpu")
MB = 10**6
linux_rss = pytest.mark.skipif(not memory.CLEAR_REFS.exists(), reason="needs Linux /proc/self/clear_refs")


def _touched(n_bytes: int) -> torch.Tensor:
    return torch.ones(n_bytes // 4)  # every page written: resident, unlike torch.empty


def _resident() -> int:
    return memory._resident()[0]


@linux_rss
def test_cpu_peak_measures_a_freed_allocation_and_adds_the_held_bytes():
    reset_peak(CPU, held_bytes=12345)
    assert peak_memory_source(CPU) == "cpu_rss_high_water"
    assert 12345 <= peak_memory_bytes(CPU) < 12345 + 4 * MB  # nothing allocated yet
    x = _touched(200 * MB)
    del x
    assert peak_memory_bytes(CPU) - 12345 == pytest.approx(200 * MB, rel=0.03)


@linux_rss
def test_cpu_peak_ignores_what_was_freed_before_the_reset():
    before = _resident()
    big = _touched(400 * MB)
    assert _resident() - before == pytest.approx(400 * MB, rel=0.03)
    del big
    assert _resident() - before < 8 * MB  # glibc gave the large block back (munmap)
    reset_peak(CPU)
    x = _touched(100 * MB)
    del x
    assert peak_memory_bytes(CPU) == pytest.approx(100 * MB, rel=0.05)


@linux_rss
def test_small_blocks_cached_by_malloc_count_again_after_a_reset():
    # 64 KB blocks come from malloc's heap; freed, they stay resident behind a live block on top.
    blocks = [_touched(64 * 1024) for _ in range(2000)]
    pin = _touched(64 * 1024)
    del blocks
    reset_peak(CPU)  # trims the heap, so the same blocks taken again show up as growth
    again = [_touched(64 * 1024) for _ in range(2000)]
    assert peak_memory_bytes(CPU) == pytest.approx(2000 * 64 * 1024, rel=0.05)
    del again, pin


def test_without_proc_the_peak_falls_back_to_ru_maxrss(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "PROC_STATUS", tmp_path / "missing")
    reset_peak(CPU, held_bytes=1000)
    assert peak_memory_source(CPU) == "cpu_ru_maxrss (not resettable)"
    assert peak_memory_bytes(CPU) >= 1000


@linux_rss
def test_an_unwritable_clear_refs_is_named_in_the_source(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "CLEAR_REFS", tmp_path / "no" / "clear_refs")
    reset_peak(CPU)
    assert peak_memory_source(CPU) == "cpu_rss_high_water (not resettable)"


def test_saved_activation_meter_counts_a_linear_input_and_a_relu_output_exactly():
    layer = nn.Linear(32, 16)
    x = torch.randn(8, 32)
    with saved_activations(layer) as saved:
        y = torch.relu(layer(x))
    # addmm saves its input x (for the weight's gradient); relu saves its output; the weight and
    # bias are the model's own and do not count.
    assert saved.bytes == x.nbytes + y.nbytes == 8 * 32 * 4 + 8 * 16 * 4
    y.sum().backward()
    assert layer.weight.grad is not None


def test_saved_activation_meter_counts_a_storage_once_and_skips_the_model():
    weight = nn.Parameter(torch.randn(16, 16))
    model = nn.Module()
    model.weight = weight
    x = torch.randn(16, 16, requires_grad=True)
    with saved_activations(model) as saved:
        (x * weight).sum()  # saves x and the parameter
        (x[2:] * x[:14]).sum()  # two views of x: the same storage again
    assert saved.bytes == x.nbytes and saved.tensors >= 3
    with saved_activations(model, enabled=False) as off:
        (x * weight).sum()
    assert off.bytes == 0 and off.tensors == 0


def test_memory_report_splits_trainable_and_frozen_tensors():
    module = nn.Module()
    module.trained = nn.Parameter(torch.zeros(4, 4))  # 64 B
    module.base = nn.Parameter(torch.zeros(8), requires_grad=False)  # 32 B, frozen like LoRA's W0
    module.register_buffer("U_frozen", torch.zeros(3))  # 12 B, a float buffer like SST's
    module.register_buffer("index", torch.zeros(5, dtype=torch.long))  # not a tensor of the model's maths
    opt = torch.optim.AdamW([module.trained])
    module.trained.grad = torch.ones(4, 4)
    opt.step()
    report = memory_report(module, opt)
    assert report["trainable_param_bytes"] == 64 and report["frozen_bytes"] == 44
    assert report["grad_bytes"] == 64 and report["param_bytes"] == 108
    assert report["optimizer_state_bytes"] == 2 * 64 + 4  # two moments and the float32 step count
    assert report["model_state_bytes"] == 108 + 64 + report["optimizer_state_bytes"]


def test_a_tiny_cpu_run_records_positive_memory_fields(tmp_path):
    train(build_config(tiny_lm_config(tmp_path, steps=2, device="cpu")))
    results = json.loads(Path(tmp_path / "results.json").read_text())
    assert results["peak_memory_source"].startswith(("cpu_rss_high_water", "cpu_ru_maxrss"))
    for key in ("peak_memory_bytes", "trainable_param_bytes", "frozen_bytes", "grad_bytes",
                "optimizer_state_bytes", "saved_activation_bytes"):
        assert results[key] > 0, key
    # Parameters, gradients and optimizer state are all alive at the optimizer step.
    assert results["peak_memory_bytes"] >= results["model_state_bytes"]
