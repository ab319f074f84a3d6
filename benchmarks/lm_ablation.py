"""SST ablations (SST-SPEC's design choices, each against the default) on one LM preset and seeds.

Every variant is SST at the same tuned learning rate (``--tuned``, SST's chosen cell of a recorded
sweep), rank, data order and budget, with one setting changed: the sampling mode (uniform,
sequential, top instead of multinomial), only the active singular values trained, random orthogonal
instead of SVD initialisation, the plain instead of the enhanced gradient, and the re-sampling
interval. Each variant runs over ``--seeds`` through the harness's ``run_comparison`` (finished runs
are reused); the report gives mean +- std, the difference to the default and whether it is within
two standard deviations (not distinguishable at this budget). Files
benchmarks/results/lm_ablation_<tag>.{json,md,png}.

    python benchmarks/lm_ablation.py --config lm-demo --tuned lm-demo --seeds 0,1,2 --tag d64_cpu
    python benchmarks/lm_ablation.py --config tiny/lm --variants default,top train.steps=4   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from sst.config import load_config, to_dict
from sst.errors import UsageError
from sst.train import sweep
from sst.train.compare import indistinguishable, load_tuned, plot_loss_curves, run_comparison
from sst.train.distributed import device_info

RESULTS = Path(__file__).resolve().parent / "results"
# name -> (what it tests, overrides of method.*; "default" is SST as specified)
VARIANTS: dict[str, tuple[str, dict]] = {
    "default": ("SST as specified (multinomial sampling, all S, SVD init, enhanced gradient)", {}),
    "uniform": ("sampling: uniform", {"method.sampling": "uniform"}),
    "sequential": ("sampling: sequential blocks", {"method.sampling": "sequential"}),
    "top": ("sampling: the r largest only", {"method.sampling": "top"}),
    "active_s": ("only the r active singular values train", {"method.singular_values": "active"}),
    "orthogonal_init": ("random orthogonal U, Vh, flat S (same norm)", {"method.init": "orthogonal"}),
    "plain_gradient": ("plain instead of enhanced gradient", {"method.enhanced_gradient": False}),
    "resample_25": ("resample_every 25", {"method.resample_every": 25}),
    "resample_100": ("resample_every 100", {"method.resample_every": 100}),
    "resample_400": ("resample_every 400", {"method.resample_every": 400}),
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="lm-demo", help="preset name or YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=300")
    p.add_argument("--tuned", default="", help="SST's values (its learning rate) from a recorded sweep")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from {list(VARIANTS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--runs", default="runs/bench/lm_ablation", help="folder for the training runs")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--tag", default="", help="file-name suffix (default: cuda or cpu)")
    args = p.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise UsageError(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if "default" not in names:
        raise UsageError("--variants: include 'default' (every variant is compared with it)")
    config = load_config(args.config, ["train.progress=false", "method.name=sst", *args.overrides])
    fixed = load_tuned(args.tuned).get("sst", {}) if args.tuned else {}
    config = sweep.with_cell(config, fixed)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    env = device_info(config.train.device)
    start = time.perf_counter()
    rows, runs = [], []
    for name in names:
        what, changes = VARIANTS[name]
        report = run_comparison(sweep.with_cell(config, changes), ["sst"], Path(args.runs) / name, seeds=seeds)
        if report["diverged"]:
            rows.append({"variant": name, "what": what, "overrides": changes, "diverged": report["diverged"]["sst"]})
            continue
        summary = report["summary"][0]
        rows.append({"variant": name, "what": what, "overrides": changes, "metric": summary["metric"],
                     "mean": summary["mean"], "std": summary["std"], "seeds": summary["seeds"],
                     "values": [r[summary["metric"]] for r in report["runs"]],
                     "epochs": summary["epochs"], "train_seconds": statistics.fmean(
                         r["train_seconds"] for r in report["runs"])})
        runs += [{**r, "method": name} for r in report["runs"]]
    base = next(r for r in rows if r["variant"] == "default")
    if "mean" not in base:
        raise UsageError(f"the default SST diverged: {base['diverged']}")
    for row in rows:
        if "mean" in row:
            row["delta"] = row["mean"] - base["mean"]
            row["distinguishable"] = row is base or not indistinguishable(
                [{**base, "method": "default"}, {**row, "method": row["variant"]}])
    result = {
        "benchmark": "lm_ablation", **env, "wall_seconds": time.perf_counter() - start, "seeds": seeds,
        "tuned": fixed, "rows": rows, "resolved_config": to_dict(config),
        "command": " ".join(["python", "benchmarks/lm_ablation.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"lm_ablation_{args.tag or env['device']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text(markdown(result, config))
    plot_loss_curves(runs, stem.with_suffix(".png"))
    print(stem.with_suffix(".md").read_text())
    return result


def markdown(result: dict, config) -> str:
    tc, task, m = config.train, config.task, config.method
    metric = next(r["metric"] for r in result["rows"] if "metric" in r)
    lines = [
        f"# SST ablations: {task.model} d {task.d_model}, r = {m.rank}, {result['device_name']}", "",
        f"Each variant changes one setting of SST; everything else is the default's: lr {tc.lr:g}"
        + (f" (SST's tuned cell {result['tuned']})" if result["tuned"] else "")
        + f", {tc.steps} steps x {task.batch_size} x {task.seq_len} tokens, resample_every "
          f"{m.resample_every}, seeds {result['seeds']} (mean ± std). "
          f"Wall time {result['wall_seconds']:.0f} s; torch {result['torch']}.", "",
        f"| variant | what changes | {metric} | vs default | distinguishable (2 std) | train s |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if "mean" not in row:
            lines.append(f"| {row['variant']} | {row['what']} | diverged | - | - | - |")
            continue
        delta = "-" if row["variant"] == "default" else f"{row['delta']:+.2f}"
        verdict = "-" if row["variant"] == "default" else ("yes" if row["distinguishable"] else "no")
        lines.append(f"| {row['variant']} | {row['what']} | {row['mean']:.2f} ± {row['std']:.2f} | {delta} | "
                     f"{verdict} | {row['train_seconds']:.1f} |")
    epochs = max((r.get("epochs") or 0.0) for r in result["rows"] if "mean" in r)
    lines += ["", f"Passes over the training data: at most {epochs:.2f}.", "",
              f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
