"""Multi30K de-en BLEU of full / LoRA / ReLoRA* / GaLore / SST at several widths, r = d/8.

For each geometry (Euclidean Transformer, Lorentz HyboNet Transformer) and width d the preset's
model is trained by every method with ``sst.train.compare.run_comparison`` (identical data order,
seed and step budget), and scored by greedy-decoding BLEU on val and test_2016_flickr; the gap
reduction per row is SST-SPEC section 8's (best of LoRA/ReLoRA* - SST) / (best of LoRA/ReLoRA* -
full) on BLEU. With two geometries the report adds hyperbolic - Euclidean BLEU per method and
width. Results go to benchmarks/results/mt_compare_<tag>.{json,md}, rewritten after every row.
Finished runs under --runs are reused, so a comparison can be split over processes and merged by
re-running the whole command.

    python benchmarks/mt_compare.py                                  # Euclidean, d = 64, 128, 256
    python benchmarks/mt_compare.py --geometries euclidean,lorentz   # hyperbolic vs Euclidean
    python benchmarks/mt_compare.py --widths 64 train.steps=300      # a reduced run
    python benchmarks/mt_compare.py --widths 64 --sweep train.lr=1e-3,3e-3,1e-2 --seeds 0,1 \
        train.steps=20000 train.eval_every=250 train.patience=8 train.schedule=constant
        # tuned per method, geometry and width on validation BLEU, 2 seeds, early stopping on BLEU

With ``--sweep`` each method's cell is chosen on validation BLEU at the first ``--tune-seeds``
seeds, repeated over ``--seeds``; scores are means over the seeds (``<key>_std`` beside them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from sst.config import load_config, to_dict
from sst.train.compare import ALL_METHODS, DEFAULT_METHODS, gap_reduction, methods_with_role, run_comparison
from sst.train.distributed import device_info
from sst.train.sweep import cell_label, parse_sweep

RESULTS = Path(__file__).resolve().parent / "results"


def bleu_gap(scores: dict[str, float], min_gap: float) -> tuple[float | None, float | None]:
    """(gap reduction, full - best of LoRA/ReLoRA*) on BLEU; the ratio is None (undefined) when
    full-rank leads the best low-rank baseline by less than ``min_gap`` BLEU, where it would be
    noise divided by noise."""
    low = [scores[m] for m in methods_with_role("baseline", scores)]
    reference, subject = methods_with_role("reference", scores), methods_with_role("subject", scores)
    if not low or not reference or not subject:
        return None, None
    lead = scores[reference[0]] - max(low)
    return (gap_reduction(scores, True) if lead >= min_gap else None), lead


SCORE_KEYS = ("val_bleu", "test_bleu", "val_loss", "test_loss", "val_ppl", "test_ppl")
COST_KEYS = ("trainable_params", "optimizer_state_bytes", "train_seconds", "tokens_per_second", "svd_seconds")


def _mean_std(values: list) -> tuple[float | None, float | None]:
    """(mean, sample std) of the numbers in ``values``; (None, None) when one is missing."""
    if not values or any(not isinstance(v, float | int) for v in values):
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def width_summary(d: int, rank: int, geometry: str, report: dict, wall: float, min_gap: float = 0.0) -> dict:
    """One (geometry, width)'s scores per method (means over its seeds, with ``<key>_std``), the
    cell each method's sweep chose, and the gap reductions on val and test BLEU (undefined where
    full-rank leads by less than ``min_gap`` BLEU) and perplexity."""
    rows = {}
    chosen = report.get("sweep", {}).get("chosen", {})
    for name in dict.fromkeys(r["method"] for r in report["runs"]):
        runs = [r for r in report["runs"] if r["method"] == name]
        row = {"seeds": [r["seed"] for r in runs]}
        for key in SCORE_KEYS:
            row[key], row[f"{key}_std"] = _mean_std([r.get(key) for r in runs])
        for key in COST_KEYS:
            row[key] = _mean_std([r[key] for r in runs])[0]
        row["train_seconds"] = sum(r["train_seconds"] for r in runs)
        for key in ("steps", "best_step"):  # steps run (patience or the cap) and the best-BLEU step
            row[key] = _mean_std([r.get(key) for r in runs])[0]
        if name in chosen:
            row["cell"], row["edge"] = chosen[name]["cell"], chosen[name]["edge"]
        rows[name] = row
    bleu = {split: bleu_gap({m: v[f"{split}_bleu"] for m, v in rows.items()}, min_gap) for split in ("val", "test")}
    gaps = {split: gap for split, (gap, _) in bleu.items()}
    # perplexity moves long before BLEU does: the steadier signal at small budgets
    ppl_gaps = {
        split: gap_reduction({m: v[f"{split}_ppl"] for m, v in rows.items()}, False)
        for split in ("val", "test")
    }
    sweep = [{"method": c["method"], "cell": c["cell"], "seed": c["seed"], "val_bleu": c.get("val_bleu"),
              "val_loss": c.get("val_loss"), "steps": c.get("steps"), "best_step": c.get("best_step"),
              "chosen": c["chosen"], "diverged": c.get("diverged")}
             for c in report.get("sweep", {}).get("cells", [])]
    return {"d_model": d, "rank": rank, "geometry": geometry, "methods": rows, "gap_reduction": gaps,
            "full_bleu_lead": {split: lead for split, (_, lead) in bleu.items()},
            "ppl_gap_reduction": ppl_gaps, "diverged": report.get("diverged", {}),
            "indistinguishable": report.get("indistinguishable", []), "sweep": sweep, "wall_seconds": wall}


def geometry_deltas(widths: list[dict]) -> list[dict]:
    """Lorentz - Euclidean val/test BLEU per width and method, where both geometries ran."""
    by_key = {(w["geometry"], w["d_model"]): w for w in widths}
    deltas = []
    for (geometry, d), hyp in by_key.items():
        euc = by_key.get(("euclidean", d))
        if geometry != "lorentz" or euc is None:
            continue
        for split in ("val", "test"):
            key = f"{split}_bleu"
            deltas.append({"d_model": d, "split": split, "delta": {
                m: hyp["methods"][m][key] - euc["methods"][m][key]
                for m in ALL_METHODS if m in hyp["methods"] and m in euc["methods"]
            }})
    return deltas


def average_gaps(widths: list[dict], key: str = "gap_reduction") -> dict:
    """Mean of ``key`` (BLEU or perplexity gap reduction) per geometry and split over the widths
    where it is defined."""
    out: dict = {}
    for geometry in dict.fromkeys(w["geometry"] for w in widths):
        out[geometry] = {}
        for split in ("val", "test"):
            gaps = [w[key][split] for w in widths if w["geometry"] == geometry and w[key][split] is not None]
            out[geometry][split] = statistics.fmean(gaps) if gaps else None
    return out


def pct(gap: float | None, lead: float | None = None) -> str:
    if gap is not None:
        return f"{100 * gap:.1f}%"
    return f"n/a (full leads by {lead:.2f})" if lead is not None else "n/a"


def _budget(s: dict, epochs: float) -> str:
    """The step budget in words: a fixed number of steps, or a cap with early stopping."""
    if s.get("patience") and s.get("eval_every"):
        return (f"at most {s['steps']} steps (~{epochs:.1f} epochs), validation every {s['eval_every']} steps, "
                f"stopped after {s['patience']} validations without a better BLEU")
    return f"{s['steps']} steps per run (~{epochs:.1f} epochs)"


def _lr_text(report: dict) -> str:
    s = report["settings"]
    keys = {k.partition(":")[2] or k for k in report.get("sweep_values", {})}
    return "tuned per method (table below)" if "train.lr" in keys else f"{s['lr']:g}"


def _score(row: dict | None, key: str, digits: int = 2) -> str:
    """``12.34`` for one seed, ``12.34 ± 0.56`` over several, ``-`` where the method is absent."""
    if row is None or row.get(key) is None:
        return "-"
    text = f"{row[key]:.{digits}f}"
    return text + (f" ± {row[f'{key}_std']:.{digits}f}" if len(row.get("seeds", [])) > 1 else "")


def _steps_text(runs: list[tuple], cap: int) -> str:
    """`` (best at 3200 of 5200)`` for a cell's run(s): its best-BLEU step and the steps run, with
    ``cap`` where the run hit the step cap rather than stopping by patience."""
    if any(s is None or b is None for s, b in runs):
        return ""
    best, ran = statistics.fmean(b for _, b in runs), statistics.fmean(s for s, _ in runs)
    return f" (best at {best:.0f} of {ran:.0f}{', cap' if any(s >= cap for s, _ in runs) else ''})"


def _tuning_lines(report: dict) -> list[str]:
    """The chosen cell of each method per (geometry, width), the sweep's validation scores per
    cell (mean over the tuning seeds), diverged methods and pairs within noise."""
    names = {"euclidean": "Euclidean", "lorentz": "Lorentz"}
    lines = []
    swept = [w for w in report["widths"] if w.get("sweep") and any(len(c["cell"]) for c in w["sweep"])]
    if swept:
        lines += ["", f"Chosen per method on validation BLEU (mean over the first {report['tune_seeds']} "
                      "seed(s)); `*` = at the edge of its grid, widen it; in brackets the step of the best "
                      "validation BLEU and the steps run (`cap`: stopped by the step cap, not by patience):", "",
                  "| geometry | d | method | chosen | validation BLEU per cell |", "|---|---|---|---|---|"]
        for w in swept:
            for m in [m for m in ALL_METHODS if any(c["method"] == m for c in w["sweep"])]:
                row = w["methods"].get(m, {})
                cells: dict[str, list] = {}
                steps: dict[str, list] = {}
                for c in (c for c in w["sweep"] if c["method"] == m):
                    label = cell_label(c["cell"])
                    cells.setdefault(label, []).append(c.get("val_bleu") if not c["diverged"] else None)
                    steps.setdefault(label, []).append((c.get("steps"), c.get("best_step")))
                grid = ", ".join(f"{label}: " + ("diverged" if None in v else f"{statistics.fmean(v):.2f}")
                                 + _steps_text(steps[label], report["settings"]["steps"])
                                 for label, v in cells.items())
                pick = cell_label(row["cell"]) + ("*" if row.get("edge") else "") if "cell" in row else "diverged"
                lines.append(f"| {names[w['geometry']]} | {w['d_model']} | {m} | {pick} | {grid} |")
    for w in report["widths"]:
        if w.get("diverged"):
            lines.append(f"\n{names[w['geometry']]} d {w['d_model']}: diverged: "
                         + "; ".join(f"{m} ({why})" for m, why in w["diverged"].items()))
        if w.get("indistinguishable"):
            lines.append(f"\n{names[w['geometry']]} d {w['d_model']}: test BLEU within two standard deviations "
                         "(not distinguishable): " + ", ".join(" / ".join(p) for p in w["indistinguishable"]))
    return lines


LABELS = {"lora": "LoRA", "relora": "ReLoRA*", "galore": "GaLore", "sst": "SST", "fira": "Fira",
          "sltrain": "SLTrain", "cola": "CoLA"}


def markdown(report: dict) -> str:
    s = report["settings"]
    cols = [m for m in ALL_METHODS if any(m in w["methods"] for w in report["widths"])]
    head, rule = " | ".join(LABELS.get(m, m) for m in cols), "---|" * len(cols)
    names = {"euclidean": "Euclidean", "lorentz": "Lorentz"}
    lines = [
        f"# Multi30K de-en BLEU, r = d/8, {report['device_name']}",
        "",
        (f"{_budget(s, report['epochs'])} (max {s['max_tokens']} padded tokens per batch), "
         f"lr {_lr_text(report)} {s['schedule']} with {s['warmup']} warm-up, "
         f"{s['n_layers']}+{s['n_layers']} layers, joint BPE vocabulary {s.get('vocab_size', '?')}, "
         f"dropout {s.get('dropout', '?')}, greedy decoding, BLEU on "
         f"{'all' if not s['bleu_max_sentences'] else s['bleu_max_sentences']} sentences of each split, "
         f"model {'of the best validation BLEU' if s.get('eval_every') else 'from the last step'}. Training time {report['train_seconds_total']:.0f} s summed over "
         f"the runs (wall time of this call {report['wall_seconds']:.0f} s); torch {report['torch']}. "
         f"Seeds {report.get('seeds', '?')}."),
        "",
        (f"BLEU gap reductions are left undefined (n/a) where full-rank leads the best of LoRA/ReLoRA* "
         f"by less than {s['min_bleu_lead']:g} BLEU; averages are over the defined ones."),
        "",
        f"| geometry | d | r | split | {head} | gap reduction |",
        f"|---|---|---|---|{rule}---|",
    ]
    for w in report["widths"]:
        for split in ("val", "test"):
            cells = [_score(w["methods"].get(m), f"{split}_bleu") for m in cols]
            lines.append(f"| {names[w['geometry']]} | {w['d_model']} | {w['rank']} | {split} | "
                         + " | ".join(cells) + f" | {pct(w['gap_reduction'][split], w['full_bleu_lead'][split])} |")
    lines += ["", "Test perplexity (unsmoothed) and its gap reduction:", "",
              f"| geometry | d | {head} | gap reduction |", f"|---|---|{rule}---|"]
    for w in report["widths"]:
        cells = [_score(w["methods"].get(m), "test_ppl", 1) for m in cols]
        lines.append(f"| {names[w['geometry']]} | {w['d_model']} | " + " | ".join(cells)
                     + f" | {pct(w['ppl_gap_reduction']['test'])} |")
    lines += _tuning_lines(report)
    lines.append("")
    for geometry, gaps in report["average_gap_reduction"].items():
        ppl = report["average_ppl_gap_reduction"][geometry]
        lines.append(f"Average gap reduction, {names[geometry]}: BLEU val {pct(gaps['val'])}, "
                     f"test {pct(gaps['test'])}; perplexity val {pct(ppl['val'])}, test {pct(ppl['test'])}")
    if report["geometry_deltas"]:
        lines += ["", "Hyperbolic minus Euclidean BLEU (same method, width and budget):", "",
                  f"| d | split | {head} |", f"|---|---|{rule}"]
        for row in report["geometry_deltas"]:
            cells = [f"{row['delta'][m]:+.2f}" if m in row["delta"] else "-" for m in cols]
            lines.append(f"| {row['d_model']} | {row['split']} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="mt-multi30k", help="preset name or YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied to every width")
    p.add_argument("--widths", default="64,128,256")
    p.add_argument("--geometries", default="", help="e.g. euclidean,lorentz (default: the preset's)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--runs", default="runs/bench/mt_compare", help="folder for the training runs")
    p.add_argument("--out", default=str(RESULTS), help="folder for the filed results")
    p.add_argument("--tag", default="", help="file-name suffix (default: cuda or cpu)")
    p.add_argument("--sweep", action="append", metavar="[METHOD:]KEY=V1,V2,...",
                   help="tune every method on validation BLEU (repeatable); METHOD:KEY is that method's own grid")
    p.add_argument("--seeds", default="", help="comma-separated seeds (mean +- std of the chosen cells)")
    p.add_argument("--tune-seeds", type=int, default=1, help="choose cells on the mean of the first N seeds")
    p.add_argument("--min-bleu-lead", type=float, default=0.5,
                   help="BLEU by which full-rank must lead the low-rank baselines for a BLEU gap reduction")
    args = p.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    overrides = ["train.progress=false", *args.overrides]
    base = load_config(args.config, overrides)
    geometries = args.geometries.split(",") if args.geometries else [base.task.geometry]
    sweep_values = parse_sweep(args.sweep)
    seeds = [int(x) for x in args.seeds.split(",") if x] or None
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
                     "beam_size": base.task.beam_size, "min_bleu_lead": args.min_bleu_lead,
                     "vocab_size": base.task.vocab_size, "dropout": base.task.dropout,
                     "eval_every": tc.eval_every, "patience": tc.patience},
        "steps": tc.steps, "widths": [], "resolved_configs": {}, "sweep_values": sweep_values,
        "seeds": seeds or [base.seed], "tune_seeds": args.tune_seeds,
    }
    for geometry in geometries:
        for d in widths:
            rank = max(1, d // 8)
            config = load_config(args.config, overrides + [
                f"task.geometry={geometry}", f"task.d_model={d}", f"method.rank={rank}"])
            t0 = time.perf_counter()
            result = run_comparison(config, args.methods.split(","), Path(args.runs) / geometry / f"d{d}",
                                    rank=rank, seeds=seeds, sweep_values=sweep_values, tune_seeds=args.tune_seeds)
            report["widths"].append(
                width_summary(d, rank, geometry, result, time.perf_counter() - t0, args.min_bleu_lead))
            report["resolved_configs"][f"{geometry}/{d}"] = to_dict(config)
            task = result["runs"][0]["task"]
            report["train_tokens_per_epoch"] = task["train_tokens"]
            report["epochs"] = tc.steps / task["train_batches_per_epoch"]
            report["wall_seconds"] = time.perf_counter() - start
            report["train_seconds_total"] = sum(
                m["train_seconds"] for w in report["widths"] for m in w["methods"].values())
            report["average_gap_reduction"] = average_gaps(report["widths"])
            report["average_ppl_gap_reduction"] = average_gaps(report["widths"], "ppl_gap_reduction")
            report["geometry_deltas"] = geometry_deltas(report["widths"])
            (out / f"mt_compare_{tag}.json").write_text(json.dumps(report, indent=2))
            (out / f"mt_compare_{tag}.md").write_text(markdown(report))
            print(markdown(report), flush=True)
    return report


if __name__ == "__main__":
    main()
