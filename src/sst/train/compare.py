"""Method comparison: train every method on identical data, seed and budget; tabulate and plot.

gap_reduction = (best baseline - subject) / (best baseline - reference) on the task's report metric
(signs flipped for higher-is-better metrics); each method config names its role (``role``: full-rank
is the reference, LoRA and ReLoRA* the baselines, SST the subject) and its restart interval
(``interval_key``). Results go to results.json, report.md and loss_curves.png in the output folder.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

from sst.config import RunConfig, from_dict, preset_dir, to_dict
from sst.errors import ConfigError, UsageError
from sst.registry import METHODS
from sst.train import sweep
from sst.train.loop import NonFiniteLossError, train

ALL_METHODS = tuple(METHODS.names())
# What a comparison trains when no methods are named: the paper's five (see default_in_comparisons).
DEFAULT_METHODS = tuple(n for n in ALL_METHODS if METHODS.configs[n].default_in_comparisons)


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


def _run_dir(out: Path, name: str, cell: dict, seed: int, swept: bool, many_seeds: bool) -> Path:
    """out/<method>[/<cell>][/seed<k>]: a sweep always names its cell and seed."""
    sub = out / name
    if swept:
        return sub / sweep.cell_label(cell) / f"seed{seed}"
    return sub / f"seed{seed}" if many_seeds else sub


def run_comparison(
    config: RunConfig, methods: list[str], out_dir: str | Path, rank: int | None = None,
    seeds: list[int] | None = None, sweep_values: dict[str, list] | None = None,
    tuned: dict[str, dict] | None = None, tune_seeds: int = 1,
) -> dict:
    """Train every method on identical data and budget; write results.json, report.md, the plot.

    ``sweep_values`` ({dotted key: values}) is run in full for each method at the first
    ``tune_seeds`` seeds; the cell with the best mean validation selection metric over them is
    chosen and repeated for the other ``seeds`` (a cell diverging at any tuning seed is out).
    ``tuned`` ({method: {dotted key: value}}, e.g. from an earlier sweep) fixes each method's
    values instead. Finished runs are reused, so a sweep can be extended or split.
    """
    out = Path(out_dir)
    seeds = seeds or [config.seed]
    if not 1 <= tune_seeds <= len(seeds):
        raise UsageError(f"tune_seeds: must be in [1, {len(seeds)}] (the number of seeds), got {tune_seeds}")
    tuning = seeds[:tune_seeds]
    sweep_values = sweep_values or {}
    swept = bool(sweep_values)
    config = dataclasses.replace(config, out_dir=str(out))
    runs, diverged, grid, chosen = [], {}, [], {}
    for name in methods:
        base = dataclasses.replace(config, method=method_config(config.method, name, rank))
        fixed = dict((tuned or {}).get(name, {}))
        if fixed:
            base = sweep.with_cell(base, fixed)
        method_sweep = sweep.applicable(sweep_values, base)
        candidates = []
        for cell in sweep.cells(method_sweep):
            results = [_train_cell(base, name, cell, seed, out, swept, len(seeds) > 1) for seed in tuning]
            grid += [{"method": name, "cell": cell, "seed": seed, **_cell_summary(result)}
                     for seed, result in zip(tuning, results)]
            candidates.append((cell, results))
        ok = [(c, rs) for c, rs in candidates if all(r.get("diverged") is None for r in rs)]
        metric_key, higher = _selection(ok) if ok else ("", True)
        means = [{metric_key: _mean_metric(rs, metric_key)} for _, rs in ok]
        best = sweep.choose(means, metric_key, higher) if ok else None
        if best is None:
            diverged[name] = next((r["diverged"] for _, rs in candidates for r in rs if r.get("diverged")),
                                  "no finite result")
            continue
        cell, results = ok[best]
        chosen[name] = {"cell": {**fixed, **cell}, "edge": sweep.at_edge(method_sweep, cell), "grid": method_sweep}
        for row in grid:
            row["chosen"] = row.get("chosen", False) or (row["method"] == name and row["cell"] == cell)
        runs += [{"seed": seed, "cell": cell, **result} for seed, result in zip(tuning, results)]
        for seed in seeds[tune_seeds:]:
            repeat = _train_cell(base, name, cell, seed, out, swept, True)
            if repeat.get("diverged"):
                diverged[name] = repeat["diverged"]
                break
            runs.append({"seed": seed, "cell": cell, **repeat})
    runs = [r for r in runs if r["method"] not in diverged]
    if not runs:
        raise NonFiniteLossError(f"every method diverged: {diverged}")
    metric, higher = runs[0]["metric"], runs[0]["higher_is_better"]
    summary = []
    for name in [m for m in methods if m not in diverged]:
        rows = [r for r in runs if r["method"] == name]
        values = [r[metric] for r in rows]
        summary.append({
            "method": name, "metric": metric, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": len(values),
            "epochs": max((r.get("epochs") or 0.0) for r in rows),
        })
    scores = {s["method"]: s["mean"] for s in summary}
    report = {
        "metric": metric, "higher_is_better": higher, "runs": runs, "summary": summary, "diverged": diverged,
        "gap_reduction": gap_reduction(scores, higher), "indistinguishable": indistinguishable(summary),
        "sweep": {"values": sweep_values, "selection_metric": runs[0].get("selection_metric"),
                  "cells": grid, "chosen": chosen},
        "tuned": tuned or {}, "seeds": seeds, "out_dir": str(out), "config": to_dict(config),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown_report(report))
    plot_loss_curves(runs, out / "loss_curves.png")
    return report


def _train_cell(base: RunConfig, name: str, cell: dict, seed: int, out: Path, swept: bool,
                many_seeds: bool) -> dict:
    """One training run of a cell; a diverging run returns {"method", "diverged": message}."""
    cfg = dataclasses.replace(sweep.with_cell(base, cell), seed=seed,
                              out_dir=str(_run_dir(out, name, cell, seed, swept, many_seeds)))
    try:
        return train(cfg, resume="auto")
    except NonFiniteLossError as err:  # one diverging cell must not sink the comparison
        return {"method": name, "diverged": str(err)}


def _selection(finished: list[tuple[dict, list[dict]]]) -> tuple[str, bool]:
    """(validation metric to choose on, higher is better), as the task reported them."""
    first = finished[0][1][0]
    return first.get("selection_metric", first["metric"]), first["higher_is_better"]


def _mean_metric(results: list[dict], key: str) -> float | None:
    """Mean of ``key`` over a cell's tuning runs; None unless every run reported a number."""
    values = [r.get(key) for r in results]
    return statistics.fmean(values) if all(isinstance(v, float | int) for v in values) else None


def _cell_summary(result: dict) -> dict:
    """What the report keeps of a sweep cell: its metrics (never the loss curve)."""
    if result.get("diverged"):
        return {"diverged": result["diverged"]}
    keep = ("metric", "selection_metric", "higher_is_better", "epochs", "steps", "best_step")
    metrics = {k: v for k, v in result.items() if k.startswith(("val_", "test_")) and isinstance(v, float | int)}
    return {**{k: result.get(k) for k in keep}, **metrics, "diverged": None}


def indistinguishable(summary: list[dict]) -> list[list[str]]:
    """Pairs of methods whose means differ by less than two standard deviations (the larger of
    the two) over seeds: not distinguishable at this budget. Empty without repeated seeds."""
    pairs = []
    for a, b in itertools.combinations(summary, 2):
        spread = 2.0 * max(a["std"], b["std"])
        if a["seeds"] > 1 and b["seeds"] > 1 and abs(a["mean"] - b["mean"]) < spread:
            pairs.append([a["method"], b["method"]])
    return pairs


def load_tuned(path: str | Path) -> dict[str, dict]:
    """Each method's chosen sweep values from a comparison's results.json (or a shipped
    ``<name>.tuned.json`` beside the presets): {method: {dotted key: value}}."""
    file = Path(path)
    if not file.is_file():
        file = preset_dir() / f"{path}.tuned.json"
    if not file.is_file():
        raise ConfigError(f"--tuned {path}: no such file (a comparison's results.json or a shipped "
                          f"<preset>.tuned.json)")
    try:
        data = json.loads(file.read_text())
    except ValueError as err:
        raise ConfigError(f"--tuned {file}: not JSON ({err})") from err
    chosen = data.get("sweep", {}).get("chosen", data.get("chosen"))
    if not isinstance(chosen, dict) or not chosen:
        raise ConfigError(f"--tuned {file}: holds no chosen sweep cells")
    return {m: dict(c.get("cell", c)) for m, c in chosen.items()}


def _mb(n: float) -> str:
    return f"{n / 2**20:.2f}"


def markdown_report(report: dict) -> str:
    """A Markdown table of the comparison (one row per method, means over seeds)."""
    metric = report["metric"]
    lines = [
        f"| method | rank | {metric} | val_loss | trainable params | % of merged model | optimizer state (MiB) "
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
            f"| {_mb(r['peak_memory_bytes']) if r.get('peak_memory_bytes') else 'n/a'} "
            f"| {mean('tokens_per_second'):.0f} | {mean('svd_seconds'):.2f} | {mean('train_seconds'):.1f} |"
        )
    for name, message in report.get("diverged", {}).items():
        lines.append(f"| {name} | diverged: {message} |" + " |" * 9)
    structural = [(s["method"], statistics.fmean(100 * r["resample_seconds"] / max(r["train_seconds"], 1e-9)
                                                 for r in report["runs"] if r["method"] == s["method"]))
                  for s in report["summary"]
                  if all("resample_seconds" in r for r in report["runs"] if r["method"] == s["method"])]
    if structural:
        lines.append("")
        lines.append("Re-sampling + re-SVD inside training: " + ", ".join(
            f"{name} {share:.2f}% of train s" for name, share in structural)
            + " (the conversion SVD is in SVD s only).")
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
    if gap is not None and gap > 1.0:
        lines.append(
            "Warning: the gap reduction is over 100% (SST beats full-rank), which usually means the "
            "full-rank baseline is not tuned: sweep train.lr for every method (--sweep)."
        )
    return "\n".join(lines + memory_lines(report) + protocol_lines(report)) + "\n"


MEMORY_PARTS = (("trainable_param_bytes", "trainable params"), ("frozen_bytes", "frozen"),
                ("grad_bytes", "gradients"), ("optimizer_state_bytes", "optimizer state"),
                ("saved_activation_bytes", "saved activations"))


def memory_lines(report: dict) -> list[str]:
    """Each method's memory breakdown (MiB), its measured peak, the peak / full-rank's, and where
    the peak comes from. Runs written before the breakdown existed show "-"."""
    firsts = [next(r for r in report["runs"] if r["method"] == s["method"]) for s in report["summary"]]
    if not firsts:
        return []
    reference = _one_with_role("reference", [r["method"] for r in firsts])
    full_peak = next((r.get("peak_memory_bytes") for r in firsts if r["method"] == reference), None)
    lines = ["", "### Memory (MiB; saved activations: one micro-batch's tensors kept for backward)", "",
             "| method | " + " | ".join(name for _, name in MEMORY_PARTS) + " | peak | peak / full-rank |",
             "|---|" + "---|" * (len(MEMORY_PARTS) + 2)]
    for r in firsts:
        parts = " | ".join(_mb(r[key]) if r.get(key) is not None else "-" for key, _ in MEMORY_PARTS)
        peak = r.get("peak_memory_bytes")
        ratio = f"{peak / full_peak:.2f}" if peak and full_peak else "-"
        lines.append(f"| {r['method']} | {parts} | {_mb(peak) if peak else 'n/a'} | {ratio} |")
    sources = sorted({r.get("peak_memory_source") or "not recorded" for r in firsts})
    lines += ["", f"Peak memory from: {', '.join(sources)}."]
    if any(s.startswith("cpu") for s in sources):
        # The methods of a comparison train one after another in this process. reset_peak trims
        # malloc's heap and clears the high-water mark before each run and file-backed pages are
        # left out, so no run inherits another's peak or hides its allocations in memory another
        # freed; but the allocator's state (its raised mmap threshold, fragmented arenas) carries
        # over. Measured (llama-20m, vocabulary 8192, 4 x 256 tokens, benchmarks/memory.py's
        # child): full-rank 310 MiB as the first run, 346 MiB after SST and LoRA in the same
        # process, 311-316 MiB in processes of its own.
        lines.append(
            "On the CPU the peak is the growth of the resident set above the run's start plus the tensors "
            "the run held then (parameters, buffers, optimizer state). The methods ran one after another "
            "in one process: the high-water mark is reset and the C heap trimmed before each, so no run "
            "inherits another's peak, but the allocator's state carries over and a later run can read up "
            "to ~10% higher than in a process of its own. For differences that small, use "
            "benchmarks/memory.py, which measures each method in its own process."
        )
    return lines


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def protocol_lines(report: dict) -> list[str]:
    """The tuning protocol behind the table: the grid, the choices, seeds, epochs, warnings."""
    sw = report.get("sweep") or {}
    lines = []
    if sw.get("values"):
        select = sw.get("selection_metric") or report["metric"]
        keys = list(dict.fromkeys(key.rpartition(":")[2] for key in sw["values"]))
        lines += ["", f"### Sweep (each method tuned on its own; chosen on {select}, validation only)", "",
                  "| method | " + " | ".join(keys) + f" | {select} | {report['metric']} | chosen |",
                  "|---|" + "---|" * (len(keys) + 3)]
        for row in sw["cells"]:
            value = "diverged" if row.get("diverged") else _fmt(row.get(select))
            headline = "" if row.get("diverged") else _fmt(row.get(report["metric"]))
            lines.append(f"| {row['method']} | " + " | ".join(_fmt(row["cell"].get(k, "-")) for k in keys)
                         + f" | {value} | {headline} | {'**yes**' if row.get('chosen') else ''} |")
        for name, choice in sw.get("chosen", {}).items():
            for key in choice.get("edge", []):
                grid = choice.get("grid") or sw["values"]
                lines.append(f"- Warning: {name}'s best {key} ({_fmt(choice['cell'][key])}) is at the edge "
                             f"of the sweep {grid[key]}: widen it.")
    if report.get("tuned"):
        lines += ["", "Per-method values fixed from an earlier sweep: "
                  + "; ".join(f"{m}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in c.items())
                              for m, c in report["tuned"].items())]
    seeds = report.get("seeds") or []
    if len(seeds) > 1:
        lines += ["", f"Seeds {seeds}: mean ± standard deviation over seeds of each method's chosen cell."]
        for a, b in report.get("indistinguishable", []):
            lines.append(f"- {a} and {b} differ by less than two standard deviations: not "
                         "distinguishable at this budget.")
    epochs = {s["method"]: s.get("epochs") for s in report["summary"] if s.get("epochs") is not None}
    if epochs:
        lines += ["", "Passes over the training data (epochs): "
                  + ", ".join(f"{m} {e:.2f}" for m, e in epochs.items())]
        for name, value in epochs.items():
            if value > 1.0 + 1e-9:
                lines.append(f"- Warning: {name} saw its training data {value:.2f} times; an honest "
                             "language-model comparison passes over it at most once.")
    return lines


def _mean_band(histories: list[list]) -> tuple[list, list, list, list]:
    """(step, value) histories of several seeds -> steps they share, mean, mean - std, mean + std."""
    common = sorted(set.intersection(*(set(step for step, _ in h) for h in histories)))
    if not common:
        return [], [], [], []
    values = [dict((step, v) for step, v in h) for h in histories]
    means, lows, highs = [], [], []
    for step in common:
        xs = [v[step] for v in values]
        mean = statistics.fmean(xs)
        std = statistics.stdev(xs) if len(xs) > 1 else 0.0
        means.append(mean), lows.append(mean - std), highs.append(mean + std)
    return common, means, lows, highs


def plot_loss_curves(runs: list[dict], path: Path) -> None:
    """Training loss (left) and the validation selection metric (right, markers) against step:
    one colour per method, the mean over its seeds with a band of one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (train_ax, val_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    methods = list(dict.fromkeys(r["method"] for r in runs))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    val_label = next((r.get("selection_metric") for r in runs if r.get("selection_metric")), "validation")
    for i, name in enumerate(methods):
        mine = [r for r in runs if r["method"] == name]
        colour = colours[i % len(colours)]
        label = f"{name} ({len(mine)} seed{'s' if len(mine) > 1 else ''})"
        for ax, key, style in ((train_ax, "loss_history", "-"), (val_ax, "val_history", "o-")):
            histories = [r[key] for r in mine if r.get(key)]
            if len(histories) != len(mine):
                continue
            steps, mean, low, high = _mean_band(histories)
            if steps:
                ax.plot(steps, mean, style, color=colour, label=label, markersize=3)
                ax.fill_between(steps, low, high, color=colour, alpha=0.2, linewidth=0)
    train_ax.set_ylabel("training loss")
    val_ax.set_ylabel(f"{val_label} (validation)")
    for ax in (train_ax, val_ax):
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
