"""Language-model comparison of full / LoRA / ReLoRA* / GaLore / SST on one preset.

Wraps ``sst.train.compare.run_comparison`` (same data, seed, budget and rank for every method)
and files its results.json, report.md and loss_curves.png under benchmarks/results as
lm_compare_<model>_<device>.{json,md,png}, with the resolved config, the device, the torch
version, the wall time, the tokens seen and the number of passes over the corpus.

    python benchmarks/lm_compare.py                                   # preset lm-llama60m
    python benchmarks/lm_compare.py --config tiny/lm train.steps=20   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


from sst.config import load_config, to_dict
from sst.train.distributed import device_info
from sst.train.compare import DEFAULT_METHODS, load_tuned, run_comparison
from sst.train.sweep import parse_sweep

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="lm-llama60m", help="preset name or YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=300")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--rank", type=int, default=None, help="default: the preset's method.rank")
    p.add_argument("--seeds", default="", help="comma-separated seeds (mean +- std of the chosen cells)")
    p.add_argument("--sweep", action="append", metavar="[METHOD:]KEY=V1,V2,...",
                   help="tune every method (repeatable); METHOD:KEY is that method's own grid")
    p.add_argument("--tune-seeds", type=int, default=1, help="choose cells on the mean of the first N seeds")
    p.add_argument("--tuned", default="", help="per-method values from an earlier sweep's results.json")
    p.add_argument("--runs", default="runs/bench/lm_compare", help="folder for the training runs")
    p.add_argument("--out", default=str(RESULTS), help="folder for the filed results")
    p.add_argument("--tag", default="", help="file-name suffix (default: cuda or cpu)")
    args = p.parse_args(argv)
    overrides = ["train.progress=false", *args.overrides]
    config = load_config(args.config, overrides)
    env = device_info(config.train.device)
    tag = args.tag or env["device"]
    model = config.task.model.replace("hf:", "hf-")
    start = time.perf_counter()
    seeds = [int(x) for x in args.seeds.split(",") if x] or None
    report = run_comparison(config, args.methods.split(","), args.runs, rank=args.rank, seeds=seeds,
                            sweep_values=parse_sweep(args.sweep), tuned=load_tuned(args.tuned) if args.tuned else None,
                            tune_seeds=args.tune_seeds)
    wall = time.perf_counter() - start

    runs_dir = Path(args.runs)
    tc = config.train
    task = report["runs"][0]["task"]
    sequences = tc.steps * tc.grad_accum * config.task.batch_size
    report.update({
        "benchmark": "lm_compare", **env, "wall_seconds": wall, "steps": tc.steps,
        "tokens_per_method": sequences * config.task.seq_len,
        "epochs": sequences / task["train_sequences"],
        "command": " ".join(["python", "benchmarks/lm_compare.py", *(argv if argv is not None else sys.argv[1:])]),
        "preset": args.config, "overrides": overrides, "resolved_config": to_dict(config),
    })
    for run in report["runs"]:
        run.pop("loss_history", None)  # the curves are in the PNG; keep the JSON readable
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"lm_compare_{model}_{tag}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    header = (
        f"# LM comparison: {config.task.model}, rank {args.rank or getattr(config.method, 'rank', '-')}, "
        f"{env['device_name']}\n\n"
        f"{tc.steps} steps x {config.task.batch_size} x {config.task.seq_len} tokens "
        f"= {report['tokens_per_method']:,} tokens per method ({report['epochs']:.2f} epochs of "
        f"{task['train_tokens']:,} training tokens); "
        f"lr {'tuned per method (see the sweep below)' if args.sweep or args.tuned else f'{tc.lr:g}'}, {tc.schedule}, warm-up "
        f"{tc.warmup_steps or tc.warmup_ratio}; the best validation checkpoint (every {tc.eval_every} "
        f"steps) is reported. Wall time {wall:.0f} s; torch {env['torch']}.\n\n"
    )
    footer = f"\nCommand: `{report['command']}`\n"
    stem.with_suffix(".md").write_text(header + (runs_dir / "report.md").read_text() + footer)
    shutil.copyfile(runs_dir / "loss_curves.png", stem.with_suffix(".png"))
    print(stem.with_suffix(".md").read_text())
    return report


if __name__ == "__main__":
    main()
