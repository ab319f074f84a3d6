"""Multi30K de-en BLEU of full / LoRA / ReLoRA* / GaLore / SST at several widths, r = d/8.

For each width d the preset's Transformer is trained by every method with
``sst.train.compare.run_comparison`` (identical data order, seed and step budget), and scored by
greedy-decoding BLEU on val and test_2016_flickr; the gap reduction per width is SST-SPEC
section 8's (best of LoRA/ReLoRA* - SST) / (best of LoRA/ReLoRA* - full) on BLEU. Results go to
benchmarks/results/mt_compare_<device>.{json,md}, rewritten after every width.

    python benchmarks/mt_compare.py                                  # d = 64, 128, 256
    python benchmarks/mt_compare.py --widths 64 train.steps=300      # a reduced run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


from sst.config import load_config, to_dict
from sst.train.distributed import device_info
from sst.train.compare import ALL_METHODS, gap_reduction, run_comparison

RESULTS = Path(__file__).resolve().parent / "results"


def width_summary(d: int, rank: int, report: dict, wall: float) -> dict:
    """One width's scores per method and its gap reductions on val and test BLEU."""
    rows = {}
    for r in report["runs"]:
        rows[r["method"]] = {
            "val_bleu": r.get("val_bleu"), "test_bleu": r.get("test_bleu"), "val_loss": r["val_loss"],
            "test_loss": r.get("test_loss"), "trainable_params": r["trainable_params"],
            "optimizer_state_bytes": r["optimizer_state_bytes"], "train_seconds": r["train_seconds"],
            "tokens_per_second": r["tokens_per_second"], "svd_seconds": r["svd_seconds"],
        }
    gaps = {
        split: gap_reduction({m: v[f"{split}_bleu"] for m, v in rows.items()}, True)
        for split in ("val", "test")
    }
    return {"d_model": d, "rank": rank, "methods": rows, "gap_reduction": gaps, "wall_seconds": wall}


def pct(gap: float | None) -> str:
    return f"{100 * gap:.1f}%" if gap is not None else "n/a"


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"# Multi30K de-en BLEU, r = d/8, {report['device_name']}",
        "",
        (f"{s['steps']} steps per run (max {s['max_tokens']} padded tokens per batch, "
         f"~{report['epochs']:.1f} epochs), lr {s['lr']:g} {s['schedule']} with {s['warmup']} warm-up, "
         f"{s['n_layers']}+{s['n_layers']} layers, greedy decoding, BLEU on "
         f"{'all' if not s['bleu_max_sentences'] else s['bleu_max_sentences']} sentences of each split, "
         f"model from the last step. Wall time {report['wall_seconds']:.0f} s; torch {report['torch']}."),
        "",
        "| d | r | split | full | LoRA | ReLoRA* | GaLore | SST | gap reduction |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in report["widths"]:
        for split in ("val", "test"):
            cells = [
                f"{w['methods'][m][f'{split}_bleu']:.2f}" if m in w["methods"] else "-"
                for m in ALL_METHODS
            ]
            lines.append(f"| {w['d_model']} | {w['rank']} | {split} | " + " | ".join(cells)
                         + f" | {pct(w['gap_reduction'][split])} |")
    for split in ("val", "test"):
        lines.append("")
        lines.append(f"Average {split} BLEU gap reduction: {pct(report['average_gap_reduction'][split])}")
    lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="mt-multi30k", help="preset name or YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied to every width")
    p.add_argument("--widths", default="64,128,256")
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--runs", default="runs/bench/mt_compare", help="folder for the training runs")
    p.add_argument("--out", default=str(RESULTS), help="folder for the filed results")
    p.add_argument("--tag", default="", help="file-name suffix (default: cuda or cpu)")
    args = p.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    overrides = ["train.progress=false", *args.overrides]
    base = load_config(args.config, overrides)
    env = device_info(base.train.device)
    tag = args.tag or env["device"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tc = base.train
    report = {
        "benchmark": "mt_compare", **env,
        "command": " ".join(["python", "benchmarks/mt_compare.py", *(argv if argv is not None else sys.argv[1:])]),
        "preset": args.config, "overrides": overrides,
        "settings": {"steps": tc.steps, "lr": tc.lr, "schedule": tc.schedule,
                     "warmup": tc.warmup_steps or tc.warmup_ratio, "max_tokens": base.task.max_tokens,
                     "n_layers": base.task.n_layers, "bleu_max_sentences": base.task.bleu_max_sentences,
                     "beam_size": base.task.beam_size},
        "steps": tc.steps, "widths": [], "resolved_configs": {},
    }
    for d in widths:
        rank = max(1, d // 8)
        config = load_config(args.config, overrides + [f"task.d_model={d}", f"method.rank={rank}"])
        t0 = time.perf_counter()
        result = run_comparison(config, args.methods.split(","), Path(args.runs) / f"d{d}", rank=rank)
        report["widths"].append(width_summary(d, rank, result, time.perf_counter() - t0))
        report["resolved_configs"][str(d)] = to_dict(config)
        task = result["runs"][0]["task"]
        report["train_tokens_per_epoch"] = task["train_tokens"]
        report["epochs"] = tc.steps / task["train_batches_per_epoch"]
        report["wall_seconds"] = time.perf_counter() - start
        report["average_gap_reduction"] = {
            split: (statistics.fmean(g) if (g := [w["gap_reduction"][split] for w in report["widths"]
                                                  if w["gap_reduction"][split] is not None]) else None)
            for split in ("val", "test")
        }
        (out / f"mt_compare_{tag}.json").write_text(json.dumps(report, indent=2))
        (out / f"mt_compare_{tag}.md").write_text(markdown(report))
        print(markdown(report), flush=True)
    return report


if __name__ == "__main__":
    main()
