"""Method comparison: train every method on identical data, seed and budget; tabulate and plot.

gap_reduction = (best baseline - subject) / (best baseline - reference) on the task's report metric
(signs flipped for higher-is-better metrics); each method config names its role (``role``: full-rank
is the reference, LoRA and ReLoRA* the baselines, SST the subject) and its restart interval
(``interval_key``). Results go to results.json, report.md and loss_curves.png in the output folder.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from sst.config import RunConfig, from_dict, to_dict
from sst.registry import METHODS
from sst.train.loop import NonFiniteLossError, train

ALL_METHODS = tuple(METHODS.names())


def method_config(base: Any, name: str, rank: int | None) -> Any:
    """Config for method ``name`` sharing the base method's targets, rank and restart interval."""
    cls = METHODS.config_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    source = to_dict(base)
    values = {k: v for k, v in source.items() if k in fields and k != "name"}
    base_interval = source.get(base.interval_key) if base.interval_key else None
    if cls.interval_key and base_interval is not None:
        values[cls.interval_key] = base_interval
    if rank is not None and "rank" in fields:
        values["rank"] = rank
    values["name"] = name
    return from_dict(cls, values, "method")


def methods_with_role(role: str, names: Any) -> list[str]:
    """The names among ``names`` whose method config plays ``role`` in the gap formula."""
    return [n for n in names if n in METHODS.configs and METHODS.configs[n].role == role]


def _one_with_role(role: str, names: Any) -> str | None:
    found = methods_with_role(role, names)
    return found[0] if found else None


def gap_reduction(scores: dict[str, float], higher_is_better: bool) -> float | None:
    """(best baseline - subject) / (best baseline - reference), sign-adjusted; None if undefined."""
    low = [scores[m] for m in methods_with_role("baseline", scores)]
    reference, subject = _one_with_role("reference", scores), _one_with_role("subject", scores)
    if not low or reference is None or subject is None:
        return None
    sign = -1.0 if higher_is_better else 1.0
    best_low = min(sign * v for v in low)
    denom = best_low - sign * scores[reference]
    if abs(denom) < 1e-12:
        return None
    return (best_low - sign * scores[subject]) / denom


def run_comparison(
    config: RunConfig, methods: list[str], out_dir: str | Path, rank: int | None = None,
    seeds: list[int] | None = None,
) -> dict:
    """Train each method (and seed) into ``out_dir``/<method>[/seed<k>]; write the three reports."""
    out = Path(out_dir)
    seeds = seeds or [config.seed]
    runs, diverged = [], {}
    for name in methods:
        for seed in seeds:
            sub = out / name if len(seeds) == 1 else out / name / f"seed{seed}"
            cfg = dataclasses.replace(
                config, method=method_config(config.method, name, rank), seed=seed, out_dir=str(sub)
            )
            try:
                result = train(cfg, resume="auto")
            except NonFiniteLossError as err:  # one diverging method must not sink the comparison
                diverged[name] = str(err)
                break
            runs.append({"seed": seed, **result})
    if not runs:
        raise NonFiniteLossError(f"every method diverged: {diverged}")
    metric = runs[0]["metric"]
    higher = runs[0]["higher_is_better"]
    summary = []
    for name in [m for m in methods if m not in diverged]:
        values = [r[metric] for r in runs if r["method"] == name]
        summary.append({
            "method": name, "metric": metric, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": len(values),
        })
    scores = {s["method"]: s["mean"] for s in summary}
    report = {
        "metric": metric, "higher_is_better": higher, "runs": runs, "summary": summary, "diverged": diverged,
        "gap_reduction": gap_reduction(scores, higher), "config": to_dict(config),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown_report(report))
    plot_loss_curves(runs, out / "loss_curves.png")
    return report


def _mb(n: float) -> str:
    return f"{n / 2**20:.2f}"


def markdown_report(report: dict) -> str:
    """A Markdown table of the comparison (one row per method, means over seeds)."""
    metric = report["metric"]
    lines = [
        f"| method | rank | {metric} | val_loss | trainable params | % of total | optimizer state (MiB) "
        "| peak memory (MiB) | units/s | SVD s | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["summary"]:
        rows = [r for r in report["runs"] if r["method"] == s["method"]]
        r = rows[0]
        mean = lambda key: statistics.fmean(x[key] for x in rows)  # noqa: E731
        value = f"{s['mean']:.3f}" + (f" ± {s['std']:.3f}" if s["seeds"] > 1 else "")
        lines.append(
            f"| {s['method']} | {r['rank'] if r['rank'] is not None else '-'} | {value} "
            f"| {mean('val_loss'):.4f} | {r['trainable_params']:,} "
            f"| {100 * r['trainable_params'] / r['total_params']:.1f}% | {_mb(r['optimizer_state_bytes'])} "
            f"| {_mb(r['peak_memory_bytes']) if r['peak_memory_bytes'] else 'n/a (CPU)'} "
            f"| {mean('tokens_per_second'):.0f} | {mean('svd_seconds'):.2f} | {mean('train_seconds'):.1f} |"
        )
    for name, message in report.get("diverged", {}).items():
        lines.append(f"| {name} | diverged: {message} |" + " |" * 9)
    gap = report["gap_reduction"]
    lines.append("")
    lines.append(
        f"Gap reduction of SST over the best of LoRA/ReLoRA* on {metric}: "
        + (f"{100 * gap:.1f}%" if gap is not None else "n/a (needs full, lora or relora, and sst)")
    )
    scores = {s["method"]: s["mean"] for s in report["summary"]}
    low = [scores[m] for m in methods_with_role("baseline", scores)]
    reference = _one_with_role("reference", scores)
    if gap is not None and low:
        best_low = max(low) if report["higher_is_better"] else min(low)
        full = scores[reference]
        if (full < best_low) == report["higher_is_better"] and full != best_low:
            lines.append(
                "Note: full-rank did not beat the best of LoRA/ReLoRA* in this run, so it is no "
                "ceiling here and the gap reduction does not measure what the paper's does."
            )
    return "\n".join(lines) + "\n"


def plot_loss_curves(runs: list[dict], path: Path) -> None:
    """Training loss against step, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        if r.get("loss_history"):
            steps, losses = zip(*r["loss_history"])
            ax.plot(steps, losses, label=f"{r['method']} (seed {r['seed']})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
