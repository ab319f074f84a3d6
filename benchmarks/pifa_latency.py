"""PIFA against the plain low-rank layer: parameters, weight bytes and latency of one layer.

A rank-k (d x d) layer as LowRankLinear holds k (2d + 1) numbers; as PIFALinear (k pivot rows
P (k, d) and coefficients C (d - k, k)) it holds k d + (d - k) k = k (2d - k), i.e. k^2 fewer, plus
a d-entry int64 output order. Both compute the same y = x W^T; the dense nn.Linear is shown too.
Results go to benchmarks/results/pifa_latency.{json,md} (the PIFA paper: at r/d = 0.5, 24.2% less
memory and 24.6% faster than low-rank, on GPU).

    nice -n 10 python benchmarks/pifa_latency.py --dims 1024,2048 --ratios 0.25,0.5,0.75
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

from sst.inference.lowrank import LowRankLinear
from sst.inference.pifa import PIFALinear

RESULTS = Path(__file__).resolve().parent / "results"


def layer_bytes(layer: nn.Module) -> int:
    """Bytes of every parameter and buffer (PIFA's output order counts)."""
    return sum(t.numel() * t.element_size() for t in [*layer.parameters(), *layer.buffers()])


def random_lowrank(d: int, rank: int, generator: torch.Generator, device: str) -> LowRankLinear:
    """A (d x d) rank-``rank`` layer with orthonormal U, Vh and a decaying spectrum."""
    U, _ = torch.linalg.qr(torch.randn(d, rank, generator=generator, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d, rank, generator=generator, dtype=torch.float64))
    S = torch.linspace(1.0, 0.1, rank, dtype=torch.float64)
    layer = LowRankLinear.from_factors(U, S, V.T, torch.zeros(d, dtype=torch.float64), rank, dtype=torch.float32)
    return layer.to(device)


@torch.no_grad()
def latencies_ms(layers: list[nn.Module], x: torch.Tensor, repeats: int, warmup: int = 3) -> list[float]:
    """Best wall time (ms) of one forward over ``x`` (tokens, d) per layer, the layers taking turns."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for layer in layers:
        for _ in range(warmup):
            layer(x)
    times = [[] for _ in layers]
    for _ in range(repeats):
        for i, layer in enumerate(layers):
            sync()
            start = time.perf_counter()
            layer(x)
            sync()
            times[i].append(time.perf_counter() - start)
    return [1000 * min(t) for t in times]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="1024,2048")
    parser.add_argument("--ratios", default="0.25,0.5,0.75", help="r/d values")
    parser.add_argument("--tokens", type=int, default=512, help="rows of x per forward")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    rows = []
    for d in [int(v) for v in args.dims.split(",") if v]:
        x = torch.randn(args.tokens, d, generator=generator).to(args.device)
        for ratio in [float(v) for v in args.ratios.split(",") if v]:
            rank = max(1, round(ratio * d))
            low = random_lowrank(d, rank, generator, args.device)
            pifa = PIFALinear.from_lowrank(low)
            dense = low.to_dense()
            with torch.no_grad():
                error = float((pifa(x) - low(x)).abs().max() / low(x).abs().max())
            dense_ms, low_ms, pifa_ms = latencies_ms([dense, low, pifa], x, args.repeats)
            row = {"d": d, "ratio": ratio, "rank": rank, "dense_bytes": layer_bytes(dense),
                   "lowrank_bytes": layer_bytes(low), "pifa_bytes": layer_bytes(pifa),
                   "lowrank_params": sum(p.numel() for p in low.parameters()),
                   "pifa_params": sum(p.numel() for p in pifa.parameters()),
                   "dense_ms": dense_ms, "lowrank_ms": low_ms, "pifa_ms": pifa_ms, "relative_error": error}
            row["memory_saving"] = 1 - row["pifa_bytes"] / row["lowrank_bytes"]
            row["speedup"] = low_ms / pifa_ms
            rows.append(row)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else (platform.processor() or "CPU")
    threads = torch.get_num_threads()
    lines = [f"# PIFA vs low-rank layer ({args.device})", "",
             f"One (d x d) float32 layer of rank r, forward of ({args.tokens}, d) on {device}, "
             f"{threads} thread(s), best of {args.repeats} interleaved runs; memory = parameters and buffers.", "",
             "| d | r/d | rank | low-rank MiB | PIFA MiB | memory saved | dense ms | low-rank ms | PIFA ms "
             "| PIFA speed-up over low-rank | max rel. error |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['d']} | {r['ratio']:.2f} | {r['rank']} | {r['lowrank_bytes'] / 2**20:.2f} "
                     f"| {r['pifa_bytes'] / 2**20:.2f} | {100 * r['memory_saving']:.1f}% | {r['dense_ms']:.2f} "
                     f"| {r['lowrank_ms']:.2f} | {r['pifa_ms']:.2f} | {r['speedup']:.2f}x "
                     f"| {r['relative_error']:.1e} |")
    table = "\n".join(lines) + "\n"
    print(table)
    report = {"args": vars(args), "device": device, "threads": threads, "torch": torch.__version__,
              "wall_seconds": time.perf_counter() - started, "command": " ".join(sys.argv), "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "pifa_latency" if args.device == "cpu" else f"pifa_latency_{args.device.split(':')[0]}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (out / f"{stem}.md").write_text(table)
    print(f"wrote {out}/{stem}.json and .md")
    return report


if __name__ == "__main__":
    main()
