"""Low-rank inference cost: parameters, weight bytes and CPU latency of a pruned model vs dense.

A targeted (out x in) layer kept at rank k costs k (in + out + 1) numbers and multiply-adds per
token instead of in * out, so it pays off once k < in * out / (in + out + 1) (about half the rank
of a square layer). Results go to benchmarks/results/lowrank_latency.{json,md}.

    python benchmarks/lowrank_latency.py --preset llama-60m --ratios 0,0.25,0.5,0.75,0.9
    python benchmarks/lowrank_latency.py --checkpoint runs/compare/sst
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

from sst.inference.lowrank import LowRankLinear, prunable_layers, prune_model
from sst.inference.merge import merge_model

RESULTS = Path(__file__).resolve().parent / "results"


def weight_bytes(model: nn.Module) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@torch.no_grad()
def latencies_ms(models: list[nn.Module], ids: torch.Tensor, repeats: int, warmup: int = 2) -> list[float]:
    """Best wall time (ms) of one forward pass over ``ids`` (B, T) per model.

    The models take turns in every repeat, so a busy machine slows them all alike; the minimum
    is the least disturbed measurement.
    """
    for model in models:
        model.eval()
        for _ in range(warmup):
            model(ids)
    times = [[] for _ in models]
    for _ in range(repeats):
        for i, model in enumerate(models):
            start = time.perf_counter()
            model(ids)
            times[i].append(time.perf_counter() - start)
    return [1000 * min(t) for t in times]


def build(args) -> tuple[nn.Module, list[str], list[str], str]:
    """(dense model, target patterns, exclude patterns, description)."""
    if args.checkpoint:
        from sst.inference.loading import load_run

        run = load_run(args.checkpoint)
        cfg = run.config.method
        return merge_model(run.model), cfg.target_modules, cfg.exclude_modules, f"checkpoint {run.checkpoint}"
    from sst.methods.surgery import DEFAULT_EXCLUDE
    from sst.models.llama import build_llama

    torch.manual_seed(0)
    model = build_llama(args.preset, args.vocab_size, max_seq_len=args.seq_len)
    return model, ["all-linear"], list(DEFAULT_EXCLUDE), f"random {args.preset} (vocab {args.vocab_size})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="run or checkpoint directory (default: a random preset model)")
    parser.add_argument("--preset", default="llama-20m", help="LLaMA preset when no checkpoint is given")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--ratios", default="0,0.25,0.5,0.75,0.9")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--always-factor", action="store_true",
                        help="use LowRankLinear even where the factors are larger than the dense matrix")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    dense, targets, exclude, source = build(args)
    target_names = list(prunable_layers(dense, targets, exclude))
    vocab = dense.config.vocab_size if hasattr(dense.config, "vocab_size") else args.vocab_size
    ids = torch.randint(0, vocab, (args.batch_size, args.seq_len), generator=torch.Generator().manual_seed(0))

    def target_params(model: nn.Module) -> int:
        mods = dict(model.named_modules())
        return sum(count(mods[n]) for n in target_names)

    models, rows = [dense], [{"ratio": None}]
    for ratio in [float(r) for r in args.ratios.split(",") if r]:
        model = copy.deepcopy(dense)
        prune_model(model, ratio=ratio, target_modules=targets, exclude_modules=exclude,
                    always_factor=args.always_factor)
        models.append(model)
        rows.append({"ratio": ratio})
    for row, model, ms in zip(rows, models, latencies_ms(models, ids, args.repeats)):
        row.update({"params": count(model), "target_params": target_params(model), "weight_bytes": weight_bytes(model),
                    "latency_ms": ms, "factored_layers": sum(isinstance(m, LowRankLinear) for m in model.modules())})
    base_ms = rows[0]["latency_ms"]
    lines = [f"# Low-rank inference cost: {source}", "",
             f"Forward pass of a ({args.batch_size}, {args.seq_len}) batch on {platform.processor() or 'CPU'}, "
             f"{torch.get_num_threads()} threads, best of {args.repeats} interleaved runs; {len(target_names)} target layers.", "",
             "| prune ratio | factored layers | params | target-layer params | weight MiB | latency ms | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "dense" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {ratio} | {r['factored_layers']} | {r['params']:,} | {r['target_params']:,} "
                     f"| {r['weight_bytes'] / 2**20:.2f} | {r['latency_ms']:.2f} | {base_ms / r['latency_ms']:.2f}x |")
    table = "\n".join(lines) + "\n"
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lowrank_latency.json").write_text(json.dumps(
        {"source": source, "args": vars(args), "threads": torch.get_num_threads(),
         "torch": torch.__version__, "rows": rows}, indent=2))
    (out / "lowrank_latency.md").write_text(table)
    print(f"wrote {out}/lowrank_latency.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
