"""Hyperbolic GCN benchmark: full-rank, LoRA, ReLoRA*, GaLore and SST on HyboNet node classification
and link prediction, each method tuned over a learning-rate grid on validation, several seeds and ranks.

For every dataset and rank r, the harness's comparison (``run_comparison`` with the sweep
``train.lr=--lrs``, as ``sst compare --sweep``) trains each method at every lr on the first
--tune-seeds seeds, picks the lr with the best mean validation score (flagged at a grid edge), trains
the other seeds at that lr only, and reports the test metric (mean ± std over all seeds); a method
diverging at a chosen-lr seed is reported as diverged. Full-rank does not depend on r: it is one
comparison shared by every r. Gap reduction = (best of LoRA/ReLoRA* - SST) / (best of LoRA/ReLoRA* -
full) on the test means. --long is HyboNet's budget: constant lr, validation every 10 epochs, stop
after 200 epochs without improvement, at most 3000. Runs go to --runs-dir/<task>/<dataset>/
{full-rank,r<rank>}/<method>/lr=<lr>/seed<k> (finished ones are reused); tables to
benchmarks/results/graph_<task>[_<tag>].{json,md}.

    python benchmarks/graph_compare.py --long --tag tuned                   # everything: slow
    python benchmarks/graph_compare.py --task link_prediction --datasets cora,disease_lp --long \\
        --ranks 2 --seeds 0,1,2 --tune-seeds 1 --tag tuned
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from sst.config import load_config, to_dict
from sst.registry import METHODS, TASKS
from sst.train.compare import DEFAULT_METHODS, gap_reduction, method_config, run_comparison
from sst.train.loop import NonFiniteLossError

RESULTS = Path(__file__).resolve().parent / "results"
# task -> dataset -> preset (src/sst/configs/<preset>.yaml)
PRESETS = {
    "node_classification": {
        "cora": "graph-cora-nc", "citeseer": "graph-citeseer-nc", "airport": "graph-airport-nc",
        "disease_tree": "graph-disease-tree-nc",
    },
    "link_prediction": {
        "disease_lp": "graph-disease-lp", "cora": "graph-cora-lp", "citeseer": "graph-citeseer-lp",
        "airport": "graph-airport-lp",
    },
}
PAPER_GAP_REDUCTION = {"node_classification": 0.737, "link_prediction": 0.825}
# HyboNet-style budget: evaluation every 10 epochs, patience 20 evaluations = 200 epochs, cap 3000.
LONG_PROTOCOL = ["train.steps=3000", "train.eval_every=10", "train.patience=20", "train.schedule=constant",
                 "train.log_every=50"]
RUN_KEYS = ("steps", "best_step", "train_seconds", "trainable_params", "total_params")


def _split(text: str, cast=str) -> list:
    return [cast(x) for x in text.split(",") if x.strip()]


def uses_rank(method: str) -> bool:
    """Whether ``method``'s config has a rank (full-rank's has none: one run serves every r)."""
    return any(f.name == "rank" for f in dataclasses.fields(METHODS.config_class(method)))


def _record(row: dict, rank: int | None) -> dict:
    """One run of the comparison (a sweep cell or a repeat seed) as the benchmark lists it."""
    lr = row["cell"].get("train.lr", row.get("lr"))
    record = {"method": row["method"], "rank": rank, "lr": lr, "seed": row["seed"]}
    if row.get("diverged"):
        return {**record, "diverged": row["diverged"]}
    return {**record, "val": row[row.get("selection_metric") or row["metric"]], "test": row[row["metric"]],
            **{k: row[k] for k in RUN_KEYS if k in row}}


def compare_methods(config, methods: list[str], rank: int | None, lrs: list[float], seeds: list[int],
                    tune_seeds: int, out: Path) -> tuple[dict, list[dict], dict | None]:
    """``run_comparison`` of ``methods`` at ``rank`` with ``train.lr`` swept over ``lrs`` (chosen
    on the mean validation score of the first ``tune_seeds`` seeds, then repeated for the rest);
    returns (summary per method, every run, the graph's description)."""
    if not methods:
        return {}, [], None
    try:
        report = run_comparison(config, methods, out, rank=rank, seeds=seeds, sweep_values={"train.lr": lrs},
                                tune_seeds=tune_seeds)
    except NonFiniteLossError as err:  # every method diverged at every lr
        report = {"sweep": {"cells": [], "chosen": {}}, "runs": [], "diverged": {m: str(err) for m in methods}}
    ranks = {m: rank if uses_rank(m) else None for m in methods}
    tuning = [{**row, "lr": row["cell"]["train.lr"]} for row in report["sweep"]["cells"]]
    repeats = [{**r, "lr": r["cell"]["train.lr"]} for r in report["runs"] if r["seed"] not in seeds[:tune_seeds]]
    records = [_record(row, ranks[row["method"]]) for row in tuning + repeats]
    tuned = {(r["method"], r["lr"], r["seed"]): r for r in records}
    summary = {}
    for m in methods:
        per_lr = {lr: [tuned.get((m, lr, s), {}) for s in seeds[:tune_seeds]] for lr in lrs}
        val_by_lr = {lr: statistics.fmean(r["val"] for r in rs) if all("val" in r for r in rs) else None
                     for lr, rs in per_lr.items()}
        summary[m] = {"val_by_lr": {f"{lr:g}": v for lr, v in val_by_lr.items()},
                      "diverged_lrs": [f"{lr:g}" for lr, v in val_by_lr.items() if v is None]}
        if m in report["diverged"]:
            summary[m].update(diverged=True, diverged_message=report["diverged"][m])
            continue
        choice = report["sweep"]["chosen"][m]
        runs = [r for r in report["runs"] if r["method"] == m]
        tests = [r[r["metric"]] for r in runs]
        summary[m].update({
            "lr": choice["cell"]["train.lr"], "lr_at_edge": "train.lr" in choice["edge"],
            "mean": statistics.fmean(tests), "std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "seeds": len(tests),
            "val_mean": statistics.fmean(r[r.get("selection_metric") or r["metric"]] for r in runs),
            **{f"{k}_mean": statistics.fmean(r[k] for r in runs) for k in ("steps", "best_step", "train_seconds")},
            "trainable_params": runs[0]["trainable_params"], "total_params": runs[0]["total_params"],
        })
    graph = next((r["task"] for r in report["runs"] if "task" in r), None)
    return summary, records, graph


def run_dataset(task: str, dataset: str, methods: list[str], ranks: list[int], lrs: list[float],
                seeds: list[int], tune_seeds: int, overrides: list[str], runs_root: Path) -> dict:
    """Every method at every rank on one dataset: summaries per rank, gap reductions, all runs.
    Full-rank (no rank) is one comparison in <root>/full-rank shared by every r; the low-rank
    methods are one comparison per rank in <root>/r<rank>."""
    preset = PRESETS[task][dataset]
    config = load_config(preset, overrides)
    root = runs_root / task / dataset
    task_class = TASKS.classes[config.task.name]
    began = time.perf_counter()
    shared = [m for m in methods if not uses_rank(m)]
    low_rank = [m for m in methods if uses_rank(m)]
    shared_summary, runs, graph = compare_methods(config, shared, None, lrs, seeds, tune_seeds, root / "full-rank")
    by_rank = {}
    for rank in ranks:
        low_summary, low_runs, low_graph = compare_methods(config, low_rank, rank, lrs, seeds, tune_seeds,
                                                           root / f"r{rank}")
        runs, graph = runs + low_runs, graph or low_graph
        summary = {m: {**shared_summary, **low_summary}[m] for m in methods}
        scores = {m: s["mean"] for m, s in summary.items() if not s.get("diverged")}
        by_rank[str(rank)] = {"summary": summary, "gap_reduction": gap_reduction(scores, task_class.higher_is_better)}
        print(f"[{task}/{dataset} r={rank}] " + ", ".join(f"{m} {_cell(s)}" for m, s in summary.items())
              + f"; gap reduction {_pct(by_rank[str(rank)]['gap_reduction'])}", flush=True)
    tc = config.train
    return {
        "task": task, "dataset": dataset, "preset": preset, "metric": task_class.report_metric,
        "higher_is_better": task_class.higher_is_better, "graph": graph, "ranks": by_rank,
        "budget": {"max_steps": tc.steps, "eval_every": tc.eval_every, "patience_evals": tc.patience,
                   "patience_steps": tc.patience * tc.eval_every, "schedule": tc.schedule},
        "runs": runs, "train_runs": len(runs), "wall_seconds": time.perf_counter() - began,
        "config": to_dict(config),
        "method_configs": {f"{m}@r{rank}": to_dict(method_config(config.method, m, rank))
                           for m in methods for rank in ranks},
    }


def _cell(s: dict, scale: float = 100.0, lr: bool = True) -> str:
    if s.get("diverged"):
        return "diverged"
    text = f"{scale * s['mean']:.1f}" + (f" ± {scale * s['std']:.1f}" if s["seeds"] > 1 else "")
    return text + (f" ({s['lr']:g}{'*' if s['lr_at_edge'] else ''})" if lr else "")


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def full_is_ceiling(summary: dict, higher_is_better: bool) -> bool:
    """Whether full-rank's mean beats every other method's that ran (the premise of a gap reduction)."""
    if "full" not in summary or summary["full"].get("diverged"):
        return False
    sign = 1.0 if higher_is_better else -1.0
    return all(sign * (summary["full"]["mean"] - s["mean"]) > 0
               for m, s in summary.items() if m != "full" and not s.get("diverged"))


def summarize(task: str, entries: dict, ranks: list[int]) -> dict:
    """Per rank: mean gap reduction over datasets; for Disease-LP, whether SST beats full-rank."""
    out = {}
    for rank in map(str, ranks):
        gaps = [e["ranks"][rank]["gap_reduction"] for e in entries.values()]
        known = [g for g in gaps if g is not None]
        out[rank] = {"mean_gap_reduction": statistics.fmean(known) if known else None,
                     "datasets_with_gap": len(known)}
        disease = entries.get("disease_lp")
        if disease is not None:
            s = disease["ranks"][rank]["summary"]
            if not s.get("sst", {}).get("diverged") and "full" in s and not s["full"].get("diverged"):
                out[rank]["disease_lp_sst_minus_full"] = s["sst"]["mean"] - s["full"]["mean"]
    return out


def markdown(report: dict) -> str:
    """Tables per rank (test score at the tuned lr, gap reduction), the lr grid, steps, settings."""
    task, methods, entries = report["task"], report["methods"], report["datasets"]
    metric = next(iter(entries.values()))["metric"]
    lrs = [f"{lr:g}" for lr in report["lrs"]]
    budget = next(iter(entries.values()))["budget"]
    lines = [
        f"# HyboNet GCN {task.replace('_', ' ')}: {', '.join(methods)}, lr tuned on validation", "",
        f"{metric} x 100, mean ± std over seeds {report['seeds']}, at the lr (in brackets) with the best mean "
        f"validation score over the first {report['tune_seeds']} seed(s) in the grid {lrs}; `*` = the chosen "
        f"lr is at the edge of the grid. Budget: at most {budget['max_steps']} steps (full-batch epochs), "
        f"validation every {budget['eval_every']}, stop after {budget['patience_steps']} steps without "
        f"improvement, {budget['schedule']} lr; the best validation checkpoint is tested. Gap reduction = "
        f"(best of LoRA/ReLoRA* - SST) / (best of LoRA/ReLoRA* - full).", "",
    ]
    for rank in map(str, report["ranks"]):
        lines += [f"## r = {rank}", "", "| dataset | " + " | ".join(methods) + " | gap reduction |",
                  "|---" * (len(methods) + 2) + "|"]
        no_ceiling = []
        for name, e in entries.items():
            s = e["ranks"][rank]["summary"]
            flag = ""
            if not full_is_ceiling(s, e["higher_is_better"]):
                flag = " †"
                no_ceiling.append(name)
            lines.append(f"| {name} | " + " | ".join(_cell(s[m]) for m in methods)
                         + f" | {_pct(e['ranks'][rank]['gap_reduction'])}{flag} |")
        r = report["by_rank"][rank]
        lines += ["", f"Mean gap reduction over {r['datasets_with_gap']} dataset(s): "
                  f"{_pct(r['mean_gap_reduction'])} (paper: {_pct(report['paper_gap_reduction'])})."]
        if no_ceiling:
            lines.append(f"† {', '.join(no_ceiling)}: full-rank does not beat every low-rank method here, so it is "
                         "no ceiling and the gap reduction does not measure what the paper's does.")
        if "disease_lp_sst_minus_full" in r:
            diff = 100 * r["disease_lp_sst_minus_full"]
            s = entries["disease_lp"]["ranks"][rank]["summary"]
            lines.append(f"Disease-LP, SST - full-rank: {diff:+.1f} points ({'SST beats' if diff > 0 else 'SST does not beat'} "
                         f"full-rank, as the paper reports it does; seed std {100 * s['sst']['std']:.1f} (SST) and "
                         f"{100 * s['full']['std']:.1f} (full)).")
        lines.append("")
    lines += ["## Validation score per lr (mean over the tuning seeds; - = diverged)", "",
              "| dataset | method | r | " + " | ".join(lrs) + " |", "|---" * (len(lrs) + 3) + "|"]
    for name, e in entries.items():
        for rank in map(str, report["ranks"]):
            for m in methods:
                if not uses_rank(m) and rank != str(report["ranks"][0]):
                    continue
                vals = e["ranks"][rank]["summary"][m]["val_by_lr"]
                cells = ["-" if vals[lr] is None else f"{100 * vals[lr]:.1f}" for lr in lrs]
                lines.append(f"| {name} | {m} | {rank if uses_rank(m) else '-'} | " + " | ".join(cells) + " |")
    lines += ["", "## Steps run / step of the best validation score (mean over seeds, tuned lr)", "",
              "| dataset | r | " + " | ".join(methods) + " | runs | wall s |", "|---" * (len(methods) + 4) + "|"]
    for name, e in entries.items():
        for rank in map(str, report["ranks"]):
            s = e["ranks"][rank]["summary"]
            cells = ["-" if s[m].get("diverged") else f"{s[m]['steps_mean']:.0f} / {s[m]['best_step_mean']:.0f}"
                     for m in methods]
            lines.append(f"| {name} | {rank} | " + " | ".join(cells) + f" | {e['train_runs']} | {e['wall_seconds']:.0f} |")
    lines += ["", "Settings (resolved configs are in the JSON):", ""]
    for name, e in entries.items():
        t, tr = e["config"]["task"], e["config"]["train"]
        lines.append(f"- {name} ({e['preset']}): hidden {t['hidden']}, {t['n_layers']} layers, dropout "
                     f"{t['dropout']}, weight decay {tr['weight_decay']}; {e['graph']}")
    lines += ["", f"Total wall time {report['wall_seconds']:.0f} s on {report['machine']} "
              f"({report['torch_threads']} torch thread(s)); command: `{report['command']}`.", ""]
    return "\n".join(lines)


def run_task(task: str, datasets: list[str], methods: list[str], ranks: list[int], lrs: list[float],
             seeds: list[int], tune_seeds: int, overrides: list[str], runs_dir: Path, out: Path,
             tag: str = "") -> dict:
    """Tune and compare ``methods`` on each dataset of ``task``; write graph_<task>[_<tag>].{json,md}."""
    for dataset in datasets:
        if dataset not in PRESETS[task]:
            raise ValueError(f"{task}: unknown dataset {dataset!r}; choose from {sorted(PRESETS[task])}")
    if not 1 <= tune_seeds <= len(seeds):
        raise ValueError(f"--tune-seeds must be in [1, {len(seeds)}] (the number of seeds), got {tune_seeds}")
    start = time.perf_counter()
    entries = {d: run_dataset(task, d, methods, ranks, lrs, seeds, tune_seeds, overrides, runs_dir)
               for d in datasets}
    report = {
        "task": task, "methods": methods, "seeds": seeds, "tune_seeds": tune_seeds, "ranks": ranks, "lrs": lrs,
        "overrides": overrides, "datasets": entries, "by_rank": summarize(task, entries, ranks),
        "paper_gap_reduction": PAPER_GAP_REDUCTION[task], "wall_seconds": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or platform.system()} CPU",
        "command": " ".join(["python", "benchmarks/graph_compare.py", *sys.argv[1:]]),
    }
    out.mkdir(parents=True, exist_ok=True)
    stem = f"graph_{task}" + (f"_{tag}" if tag else "")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (out / f"{stem}.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=[*PRESETS, "both"], default="both")
    parser.add_argument("--datasets", help="comma-separated (default: every dataset of the task)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--tune-seeds", type=int, default=0,
                        help="seeds (the first ones) run at every lr to choose it; 0: all of them")
    parser.add_argument("--ranks", default="1,2,4", help="comma-separated ranks of the low-rank methods")
    parser.add_argument("--lrs", default="0.003,0.01,0.03", help="comma-separated learning-rate grid")
    parser.add_argument("--long", action="store_true", help="HyboNet's budget (LONG_PROTOCOL) on every preset")
    parser.add_argument("--tag", default="", help="suffix of the result files: graph_<task>_<tag>")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: fastest for these tiny full-batch models)")
    parser.add_argument("--runs-dir", default="runs/graph-compare", help="where the individual runs go")
    parser.add_argument("--out", default=str(RESULTS), help="folder for the result files")
    parser.add_argument("overrides", nargs="*", help="dotted overrides applied to every preset")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    overrides = (LONG_PROTOCOL if args.long else []) + list(args.overrides)
    seeds = _split(args.seeds, int)
    tasks = list(PRESETS) if args.task == "both" else [args.task]
    for task in tasks:
        datasets = _split(args.datasets) if args.datasets else list(PRESETS[task])
        datasets = [d for d in datasets if d in PRESETS[task]] if args.task == "both" else datasets
        if not datasets:
            continue
        report = run_task(task, datasets, _split(args.methods), _split(args.ranks, int), _split(args.lrs, float),
                          seeds, args.tune_seeds or len(seeds), overrides, Path(args.runs_dir), Path(args.out),
                          args.tag)
        print(markdown(report))
        print(f"wrote {args.out}/graph_{task}{'_' + args.tag if args.tag else ''}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
