"""PIFA: the pivot-row form equals the low-rank layer, holds k^2 fewer numbers, and exports."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sst.inference.export import export_run, load_exported, prepare_for_export
from sst.inference.loading import load_run
from sst.inference.lowrank import LowRankLinear, layer_factors
from sst.inference.merge import merge_model
from sst.inference.pifa import PIFALinear, pivot_rows
from sst.models.hf import lm_logits
from sst.spectral import FactoredLinear


def _lowrank(out_f, in_f, rank, dtype=torch.float64, use_bias=True):
    lin = nn.Linear(in_f, out_f, bias=use_bias, dtype=dtype)
    return LowRankLinear.from_factors(*layer_factors(lin, torch.float64), rank=rank, dtype=dtype)


def _count(layer):
    return sum(p.numel() for p in layer.parameters())


@pytest.mark.parametrize("out_f,in_f,rank", [(20, 12, 5), (12, 20, 5), (16, 16, 8), (30, 10, 10)])
@pytest.mark.parametrize("use_bias", [True, False])
def test_pifa_equals_the_lowrank_layer_and_is_smaller(out_f, in_f, rank, use_bias):
    low = _lowrank(out_f, in_f, rank, use_bias=use_bias)
    pifa = PIFALinear.from_lowrank(low)
    assert isinstance(pifa, FactoredLinear) and pifa.rank == rank
    x = torch.randn(4, 3, in_f, dtype=torch.float64)
    torch.testing.assert_close(pifa(x), low(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pifa.dense_weight(), low.dense_weight(), rtol=1e-10, atol=1e-10)
    bias = out_f if use_bias else 0
    assert _count(pifa) == rank * in_f + (out_f - rank) * rank + bias
    assert _count(low) == rank * (in_f + out_f) + rank + bias
    assert _count(low) - _count(pifa) == rank * rank + rank  # k^2 (and LowRank's S)


def test_pifa_in_float32_matches_within_float_tolerance():
    low = _lowrank(64, 48, 24, dtype=torch.float32)
    pifa = PIFALinear.from_lowrank(low)
    assert pifa.P.dtype == torch.float32
    x = torch.randn(8, 48)
    torch.testing.assert_close(pifa(x), low(x), rtol=1e-4, atol=1e-5)


def test_pivots_are_rows_whose_span_holds_the_others():
    W = torch.randn(9, 3, dtype=torch.float64) @ torch.randn(3, 7, dtype=torch.float64)
    U = torch.linalg.svd(W, full_matrices=False)[0][:, :3]
    pivots, others, C = pivot_rows(U)
    assert sorted(torch.cat([pivots, others]).tolist()) == list(range(9))
    torch.testing.assert_close(W[others], C @ W[pivots], rtol=1e-10, atol=1e-10)


def test_pivot_rows_against_scipy_qr_with_column_pivoting():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    W = torch.randn(12, 4, dtype=torch.float64) @ torch.randn(4, 10, dtype=torch.float64)
    U = torch.linalg.svd(W, full_matrices=False)[0][:, :4]
    pivots, others, C = pivot_rows(U)
    # QR with column pivoting of W^T picks another pivot set; any independent set reconstructs W
    _, _, qr_pivots = scipy_linalg.qr(W.T.numpy(), pivoting=True)
    rows = torch.as_tensor(qr_pivots[:4])
    rest = torch.as_tensor(qr_pivots[4:])
    C_qr = torch.linalg.lstsq(W[rows].T, W[rest].T).solution.T
    torch.testing.assert_close(C_qr @ W[rows], W[rest], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(C @ W[pivots], W[others], rtol=1e-9, atol=1e-9)
    assert float(torch.linalg.cond(U[pivots])) < 50  # partial pivoting keeps the pivot block tame


def test_merge_turns_pifa_into_the_same_dense_layer():
    pifa = PIFALinear.from_lowrank(_lowrank(10, 8, 3))
    holder = nn.Sequential(pifa)
    x = torch.randn(5, 8, dtype=torch.float64)
    before = holder(x)
    merge_model(holder)
    assert type(holder[0]) is nn.Linear
    torch.testing.assert_close(holder(x), before, rtol=1e-12, atol=1e-12)


def test_bad_pifa_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"rank must be an integer in \[1, 4\]"):
        PIFALinear(4, 6, rank=5)
    with pytest.raises(ValueError, match="a rank-5 factor needs at least 5 rows"):
        pivot_rows(torch.randn(3, 5))


@pytest.fixture
def ids():
    return torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))


def test_pifa_export_round_trip(sst_run, tmp_path, ids):
    run = load_run(sst_run)
    ranks = prepare_for_export(run, "pifa", ratio=0.6)
    layers = [m for m in run.model.modules() if isinstance(m, PIFALinear)]
    assert len(layers) == 14 and all(r.rank == 26 and r.factored for r in ranks.values())
    reference = lm_logits(run.model, ids)
    lowrank = load_run(sst_run)
    prepare_for_export(lowrank, "lowrank", ratio=0.6)
    torch.testing.assert_close(reference, lm_logits(lowrank.model, ids), rtol=1e-4, atol=1e-4)
    smaller = sum(_count(m) for m in lowrank.model.modules() if isinstance(m, LowRankLinear)) - sum(
        _count(m) for m in layers)
    assert smaller == sum(26 * 26 + 26 for _ in layers)

    out = export_run(sst_run, tmp_path / "pifa", "pifa", ratio=0.6)
    saved = json.loads((out / "pifa.json").read_text())
    assert len(saved) == 14 and json.loads((out / "export.json").read_text())["format"] == "pifa"
    model = load_exported(out)
    loaded = [m for m in model.modules() if isinstance(m, PIFALinear)]
    assert len(loaded) == 14 and all(torch.equal(a.order, b.order) for a, b in zip(loaded, layers))
    torch.testing.assert_close(lm_logits(model, ids), reference, rtol=1e-5, atol=1e-5)


def test_pifa_export_needs_a_prune_setting(sst_run):
    with pytest.raises(ValueError, match="--format pifa needs --ratio or --energy"):
        prepare_for_export(load_run(sst_run), "pifa")


def test_latency_benchmark_runs_and_files_its_results(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "pifa_latency.py"
    spec = importlib.util.spec_from_file_location("bench_pifa_latency", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--dims", "32", "--ratios", "0.25,0.5", "--tokens", "8", "--repeats", "2",
                         "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "pifa_latency.json").read_text())["rows"]
    assert [r["rank"] for r in rows] == [8, 16] and report["rows"] == rows
    for r in rows:
        k, d = r["rank"], r["d"]
        assert r["pifa_params"] == k * d + (d - k) * k + d and r["lowrank_params"] == k * (2 * d + 1) + d
        assert r["pifa_bytes"] == 4 * r["pifa_params"] + 8 * d  # float32 numbers and the int64 order
        assert r["relative_error"] < 1e-5 and r["lowrank_ms"] > 0 and r["pifa_ms"] > 0
    assert "| 32 | 0.50 | 16 |" in (tmp_path / "pifa_latency.md").read_text()
