"""The pruning study: a trained model's metric as its smallest singular values are dropped.

For each prune ratio p every targeted layer keeps its top ceil((1 - p) K) singular values
(SST-SPEC section 7). The paper's claim: SST-trained models degrade far less than full-rank
ones, because SST concentrates the information in fewer singular values.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sst.errors import UsageError
from sst.inference.loading import LoadedRun
from sst.inference.lowrank import check_ratio, layer_factors, prunable_layers, prune_model
from sst.inference.merge import merge_model, require_mergeable

DEFAULT_RATIOS = tuple(i / 10 for i in range(10))
JSON_FILE, PLOT_FILE = "prune.json", "prune.png"


def headline_metric(run: LoadedRun, split: str = "val") -> str:
    """The task's report metric (else its selection metric), for ``split`` ("val_ppl" -> "test_ppl")."""
    name = run.task.report_metric or run.task.selection_metric
    return split + name[name.index("_"):] if "_" in name else name


def prune_curve(
    run: LoadedRun, ratios: Sequence[float] = DEFAULT_RATIOS, split: str = "val",
    max_batches: int = 0, metric: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``run`` at every prune ratio; -> {"metric", "points": [{ratio, value, ...}], ...}.

    The SVD of each layer is taken once; every ratio prunes a fresh copy of the merged model.
    """
    ratios = [check_ratio(float(r)) for r in ratios]
    metric = metric or headline_metric(run, split)
    cfg = run.config.method
    require_mergeable(run.model, run.task.build_model, "singular-value pruning")
    base = merge_model(copy.deepcopy(run.model))
    layers = prunable_layers(base, cfg.target_modules, cfg.exclude_modules)
    factors = {name: layer_factors(layer, torch.float64) for name, layer in layers.items()}
    points = []
    for ratio in ratios:
        model = copy.deepcopy(base)
        ranks = prune_model(model, ratio=ratio, target_modules=cfg.target_modules,
                            exclude_modules=cfg.exclude_modules, factors=factors)
        metrics = run.task.evaluate(model, split, max_batches)
        if metric not in metrics:
            raise UsageError(f"metric {metric!r} is not among the task's metrics {sorted(metrics)}")
        kept = sum(r.rank for r in ranks.values())
        total = sum(r.full_rank for r in ranks.values())
        energy = sum(r.energy_kept for r in ranks.values()) / len(ranks)
        points.append({"ratio": ratio, "value": metrics[metric], "kept_singular_values": kept,
                       "total_singular_values": total, "mean_energy_kept": energy, "metrics": metrics})
        del model
    return {
        "checkpoint": str(run.checkpoint),
        "task": run.config.task.name,
        "method": run.config.method.name,
        "metric": metric,
        "higher_is_better": run.task.higher_is_better,
        "split": split,
        "max_batches": max_batches,
        "pruned_layers": len(layers),
        "points": points,
    }


def plot_curves(curves: dict[str, dict], path: str | Path, title: str = "Singular-value pruning") -> Path:
    """One line per labelled curve: metric value against prune ratio; saved as PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in curves.items():
        xs = [p["ratio"] for p in curve["points"]]
        ax.plot(xs, [p["value"] for p in curve["points"]], marker="o", label=label)
    metric = next(iter(curves.values()))["metric"]
    ax.set_xlabel("prune ratio (share of singular values dropped per layer)")
    ax.set_ylabel(metric)
    if metric.endswith("ppl"):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def prune_study(
    run: LoadedRun, out_dir: str | Path, ratios: Sequence[float] = DEFAULT_RATIOS,
    split: str = "val", max_batches: int = 0,
) -> dict[str, Any]:
    """``prune_curve`` of one run, written to ``out_dir``/prune.json and prune.png."""
    curve = prune_curve(run, ratios, split, max_batches)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_FILE).write_text(json.dumps(curve, indent=2))
    plot_curves({curve["method"]: curve}, out / PLOT_FILE)
    return curve
