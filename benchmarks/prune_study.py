"""Pruning study: does an SST-trained model survive singular-value pruning better than full-rank?

Reads the ``sst/`` and ``full/`` runs of one ``sst compare`` output folder (or trains them first
with ``--config``), evaluates both at the same prune ratios and writes
benchmarks/results/prune_study.{json,md,png}. Degradation = metric(p) / metric(0) - 1 (for loss
and perplexity; reported with the sign flipped for higher-is-better metrics).

    python benchmarks/prune_study.py runs/compare --ratios 0,0.1,0.2,0.3,0.5,0.7,0.9
    python benchmarks/prune_study.py runs/compare --config tiny/lm train.steps=300
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sst.config import to_dict
from sst.inference.loading import load_run
from sst.inference.pruning import DEFAULT_RATIOS, plot_curves, prune_curve

RESULTS = Path(__file__).resolve().parent / "results"


def degradation(curve: dict) -> list[float]:
    """Relative change of the metric from ratio 0 (positive = worse) at each point."""
    base = curve["points"][0]["value"]
    sign = -1.0 if curve["higher_is_better"] else 1.0
    return [sign * (p["value"] / base - 1.0) if base else float("nan") for p in curve["points"]]


def markdown(curves: dict[str, dict]) -> str:
    labels = list(curves)
    metric = curves[labels[0]]["metric"]
    head = " | ".join(f"{m} {metric} | {m} change" for m in labels)
    lines = [f"# Singular-value pruning: {metric} against prune ratio", "",
             f"| ratio | {head} |", "|---" * (1 + 2 * len(labels)) + "|"]
    changes = {m: degradation(c) for m, c in curves.items()}
    for i, point in enumerate(curves[labels[0]]["points"]):
        cells = " | ".join(f"{curves[m]['points'][i]['value']:.4f} | {100 * changes[m][i]:+.1f}%" for m in labels)
        lines.append(f"| {point['ratio']:.2f} | {cells} |")
    lines += ["", "Change = metric(ratio) / metric(0) - 1 (positive = worse). Each targeted layer keeps "
              "its top ceil((1 - ratio) k) singular values; embeddings and the LM head are not pruned.", ""]
    for m, c in curves.items():
        lines.append(f"- {m}: {c['checkpoint']} ({c['pruned_layers']} layers pruned)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_dir", help="output folder of `sst compare` holding sst/ and full/ runs")
    parser.add_argument("--methods", default="full,sst", help="run sub-folders to compare (default full,sst)")
    parser.add_argument("--ratios", default=",".join(str(r) for r in DEFAULT_RATIOS))
    parser.add_argument("--max-batches", type=int, default=0, help="evaluation batches per ratio (0: all)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", default=str(RESULTS), help="folder for prune_study.{json,md,png}")
    parser.add_argument("--config", help="train the runs first with `sst compare` on this config/preset")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for --config")
    args = parser.parse_args(argv)

    methods = [m for m in args.methods.split(",") if m]
    compare_dir = Path(args.compare_dir)
    if args.config:
        from sst.config import load_config
        from sst.train.compare import run_comparison

        run_comparison(load_config(args.config, args.overrides), methods, compare_dir)
    ratios = [float(r) for r in args.ratios.split(",") if r]
    curves, configs = {}, {}
    for method in methods:
        run = load_run(compare_dir / method)
        configs[method] = to_dict(run.config)
        curve = prune_curve(run, ratios, args.split, args.max_batches)
        curves[method] = curve
        print(f"{method}: " + ", ".join(f"{p['ratio']:.2f}->{p['value']:.4f}" for p in curve["points"]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"compare_dir": str(compare_dir), "ratios": ratios, "curves": curves,
              "degradation": {m: degradation(c) for m, c in curves.items()},
              "configs": configs}
    (out / "prune_study.json").write_text(json.dumps(report, indent=2))
    (out / "prune_study.md").write_text(markdown(curves))
    plot_curves(curves, out / "prune_study.png", "Singular-value pruning: SST vs full-rank training")
    print(markdown(curves))
    print(f"wrote {out}/prune_study.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
