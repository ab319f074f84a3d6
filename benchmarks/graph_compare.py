"""Hyperbolic GCN benchmark: full-rank, LoRA, ReLoRA*, GaLore and SST on HyboNet node classification
and link prediction, same rank, data and step budget, several seeds.

Each dataset is one ``sst.train.compare.run_comparison`` (its runs land in --runs-dir/<task>/<dataset>);
the tables go to benchmarks/results/graph_<task>.{json,md}. Gap reduction per dataset =
(best of LoRA/ReLoRA* - SST) / (best of LoRA/ReLoRA* - full) on the test metric (F1 or ROC-AUC).

    python benchmarks/graph_compare.py                          # both tasks, every dataset, 3 seeds
    python benchmarks/graph_compare.py --task node_classification --datasets cora train.steps=200
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
from sst.train.compare import DEFAULT_METHODS, gap_reduction, method_config, run_comparison

RESULTS = Path(__file__).resolve().parent / "results"
# task -> dataset -> preset (src/sst/configs/<preset>.yaml)
PRESETS = {
    "node_classification": {
        "cora": "graph-cora-nc", "airport": "graph-airport-nc", "disease_tree": "graph-disease-tree-nc",
    },
    "link_prediction": {
        "disease_lp": "graph-disease-lp", "cora": "graph-cora-lp", "airport": "graph-airport-lp",
    },
}
RUN_KEYS = ("method", "seed", "steps", "best_step", "train_seconds", "svd_seconds", "trainable_params",
            "total_params", "optimizer_state_bytes")


def _split(text: str, cast=str) -> list:
    return [cast(x) for x in text.split(",") if x.strip()]


def dataset_entry(task: str, dataset: str, preset: str, config, methods, rank, report, wall) -> dict:
    """The JSON record of one dataset: resolved configs, budget, per-method summary, gap reduction."""
    runs = [{k: r.get(k) for k in RUN_KEYS} | {"value": r[r["metric"]]} for r in report["runs"]]
    summary = {s["method"]: {k: s[k] for k in ("mean", "std", "seeds")} for s in report["summary"]}
    for name, s in summary.items():
        mine = [r for r in report["runs"] if r["method"] == name]
        s["steps_mean"] = statistics.fmean(r["steps"] for r in mine)
        s["best_step_mean"] = statistics.fmean(r["best_step"] for r in mine)
        s["train_seconds_mean"] = statistics.fmean(r["train_seconds"] for r in mine)
        s["trainable_params"] = mine[0]["trainable_params"]
        s["total_params"] = mine[0]["total_params"]
    for name in report["diverged"]:
        summary[name] = {"mean": None, "std": None, "seeds": 0, "diverged": True}
    tc = config.train
    return {
        "task": task, "dataset": dataset, "preset": preset,
        "metric": report.get("metric"), "higher_is_better": report.get("higher_is_better", True),
        "summary": summary, "gap_reduction": report.get("gap_reduction"),
        "diverged": report["diverged"], "runs": runs,
        "graph": report["runs"][0]["task"] if report["runs"] else None,
        "budget": {"max_steps": tc.steps, "eval_every": tc.eval_every, "patience": tc.patience,
                   "patience_steps": tc.patience * tc.eval_every},
        "wall_seconds": wall,
        "config": to_dict(config),
        "method_configs": {m: to_dict(method_config(config.method, m, rank)) for m in methods},
    }


def _cell(s: dict, scale: float = 100.0) -> str:
    if s.get("diverged"):
        return "diverged"
    std = f" ± {scale * s['std']:.1f}" if s["seeds"] > 1 else ""
    return f"{scale * s['mean']:.1f}{std}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def markdown(report: dict) -> str:
    """Tables: score per dataset and method, gap reduction, steps used, and the settings."""
    task, methods, entries = report["task"], report["methods"], report["datasets"]
    metric = next((e["metric"] for e in entries.values() if e["metric"]), "metric")
    lines = [
        f"# HyboNet GCN {task.replace('_', ' ')}: {', '.join(methods)} at rank {report['rank']}", "",
        f"{metric} x 100, mean ± std over seeds {report['seeds']} (model selected by the best "
        f"validation score). Gap reduction = (best of LoRA/ReLoRA* - SST) / (best of LoRA/ReLoRA* - full).",
        "", "| dataset | " + " | ".join(methods) + " | gap reduction |",
        "|---" * (len(methods) + 2) + "|",
    ]
    for name, e in entries.items():
        cells = [_cell(e["summary"][m]) if m in e["summary"] else "-" for m in methods]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_pct(e['gap_reduction'])} |")
    lines += ["", f"Mean of the per-dataset gap reductions: {_pct(report['mean_gap_reduction'])}; "
              f"gap reduction of the dataset-averaged scores: {_pct(report['gap_reduction_of_means'])} "
              f"(paper: {_pct(report['paper_gap_reduction'])}).",
              "", "Optimizer steps run (mean over seeds; early stopping) / step of the best validation score:",
              "", "| dataset | " + " | ".join(methods) + " | max steps | wall s |",
              "|---" * (len(methods) + 3) + "|"]
    for name, e in entries.items():
        cells = [f"{e['summary'][m]['steps_mean']:.0f} / {e['summary'][m]['best_step_mean']:.0f}"
                 if m in e["summary"] and not e["summary"][m].get("diverged") else "-" for m in methods]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {e['budget']['max_steps']} | {e['wall_seconds']:.0f} |")
    lines += ["", "Trainable parameters (share of all parameters):", "",
              "| dataset | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for name, e in entries.items():
        cells = []
        for m in methods:
            s = e["summary"].get(m, {})
            cells.append(f"{s['trainable_params']:,} ({100 * s['trainable_params'] / s['total_params']:.0f}%)"
                         if "trainable_params" in s else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Settings (resolved configs are in the JSON):", ""]
    for name, e in entries.items():
        t, tr, m = e["config"]["task"], e["config"]["train"], e["method_configs"]
        sst_cfg = m.get("sst", {})
        lines.append(
            f"- {name} ({e['preset']}): hidden {t['hidden']}, {t['n_layers']} layers, dropout {t['dropout']}, "
            f"lr {tr['lr']}, weight decay {tr['weight_decay']}, {tr['schedule']} schedule, max {tr['steps']} steps, "
            f"eval every {tr['eval_every']}, patience {tr['patience']} evals"
            + (f"; SST resample_every {sst_cfg['resample_every']}, restart warm-up {sst_cfg['restart_warmup_steps']}"
               if sst_cfg else "")
            + (f"; diverged: {', '.join(e['diverged'])}" if e["diverged"] else "")
        )
    lines += ["", f"Total wall time {report['wall_seconds']:.0f} s on {report['machine']} "
              f"({report['torch_threads']} torch thread(s)).", ""]
    return "\n".join(lines)


def run_task(task: str, datasets: list[str], methods: list[str], seeds: list[int], rank: int | None,
             overrides: list[str], runs_dir: Path, out: Path) -> dict:
    """Compare ``methods`` on each dataset of ``task``; write graph_<task>.{json,md} into ``out``."""
    start = time.perf_counter()
    entries = {}
    for dataset in datasets:
        if dataset not in PRESETS[task]:
            raise ValueError(f"{task}: unknown dataset {dataset!r}; choose from {sorted(PRESETS[task])}")
        preset = PRESETS[task][dataset]
        config = load_config(preset, overrides)
        config = dataclasses.replace(config, out_dir=str(runs_dir / task / dataset))
        began = time.perf_counter()
        report = run_comparison(config, methods, Path(config.out_dir), rank, seeds)
        entry = dataset_entry(task, dataset, preset, config, methods, rank, report,
                              time.perf_counter() - began)
        entries[dataset] = entry
        print(f"[{task}/{dataset}] " + ", ".join(f"{m} {_cell(s)}" for m, s in entry["summary"].items())
              + f"; gap reduction {_pct(entry['gap_reduction'])} ({entry['wall_seconds']:.0f} s)", flush=True)
    gaps = [e["gap_reduction"] for e in entries.values() if e["gap_reduction"] is not None]
    means = {}
    for m in methods:
        values = [e["summary"][m]["mean"] for e in entries.values() if e["summary"].get(m, {}).get("mean") is not None]
        if len(values) == len(entries):
            means[m] = statistics.fmean(values)
    first = next(iter(entries.values()))
    report = {
        "task": task, "methods": methods, "seeds": seeds,
        "rank": rank if rank is not None else first["config"]["method"].get("rank"),
        "overrides": overrides, "datasets": entries,
        "mean_gap_reduction": statistics.fmean(gaps) if gaps else None,
        "dataset_mean_scores": means,
        "gap_reduction_of_means": gap_reduction(means, first["higher_is_better"]) if means else None,
        "paper_gap_reduction": {"node_classification": 0.737, "link_prediction": 0.825}[task],
        "wall_seconds": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or platform.system()} CPU",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"graph_{task}.json").write_text(json.dumps(report, indent=2))
    (out / f"graph_{task}.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=[*PRESETS, "both"], default="both")
    parser.add_argument("--datasets", help="comma-separated (default: every dataset of the task)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rank", type=int, help="rank of every low-rank method (default: the preset's, 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: fastest for these tiny full-batch models)")
    parser.add_argument("--runs-dir", default="runs/graph-compare", help="where the individual runs go")
    parser.add_argument("--out", default=str(RESULTS), help="folder for graph_<task>.{json,md}")
    parser.add_argument("overrides", nargs="*", help="dotted overrides applied to every preset")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    tasks = list(PRESETS) if args.task == "both" else [args.task]
    for task in tasks:
        datasets = _split(args.datasets) if args.datasets else list(PRESETS[task])
        datasets = [d for d in datasets if d in PRESETS[task]] if args.task == "both" else datasets
        if not datasets:
            continue
        report = run_task(task, datasets, _split(args.methods), _split(args.seeds, int), args.rank,
                          list(args.overrides), Path(args.runs_dir), Path(args.out))
        print(markdown(report))
        print(f"wrote {args.out}/graph_{task}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
