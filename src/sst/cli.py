"""Command line: ``sst train | compare | list | ...`` parse arguments and call library functions.

Every error a user can cause (an ``SSTError``, or a bad option) is printed as one line
``sst: error: ...`` with exit status 2; ``--debug`` or ``SST_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path

import torch

from sst.config import list_presets, load_config
from sst.errors import ConfigError, SSTError, UsageError

DEBUG_ENV = "SST_DEBUG"


def _split(text: str | None, cast=str) -> list | None:
    return [cast(x) for x in text.split(",") if x] if text else None


def cmd_train(args: argparse.Namespace) -> int:
    from sst.train.interrupt import TrainingInterrupted
    from sst.train.logging import one_line_warnings
    from sst.train.loop import train

    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
    config = load_config(args.config, overrides)
    try:
        with one_line_warnings():
            results = train(config, resume=args.resume)
    except TrainingInterrupted as stop:  # a checkpoint was written
        print(f"sst: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
        print("sst: aborted; resume from the last checkpoint, if any, with --resume", file=sys.stderr)
        return 130
    summary = {k: v for k, v in results.items() if not isinstance(v, (list, dict))}
    print(json.dumps(summary, indent=2))
    return 0


def _seed_list(text: str | None) -> list[int] | None:
    try:
        return _split(text, int)
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def cmd_compare(args: argparse.Namespace) -> int:
    from sst.registry import METHODS
    from sst.train.compare import DEFAULT_METHODS, load_tuned, run_comparison
    from sst.train.sweep import parse_sweep

    config = load_config(args.config, list(args.overrides))
    methods = _split(args.methods) or list(DEFAULT_METHODS)
    for name in methods:
        METHODS.config_class(name)  # an unknown name fails before anything trains
    out = args.out or config.out_dir
    tuned = load_tuned(args.tuned) if args.tuned else None
    report = run_comparison(config, methods, out, rank=args.rank, seeds=_seed_list(args.seeds),
                            sweep_values=parse_sweep(args.sweep), tuned=tuned, tune_seeds=args.tune_seeds)
    print((Path(out) / "report.md").read_text())
    print(f"wrote {out}/results.json, {out}/report.md, {out}/loss_curves.png")
    return 0 if report["runs"] else 1


def cmd_list(args: argparse.Namespace) -> int:
    from sst.methods import METHOD_CONFIGS
    from sst.tasks import TASK_CONFIGS

    print("presets: " + ", ".join(list_presets()))
    print("tasks:   " + ", ".join(sorted(TASK_CONFIGS)))
    print("methods: " + ", ".join(METHOD_CONFIGS))
    return 0


def _ratio_list(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    bad = [v for v in values if not 0.0 <= v < 1.0]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"prune ratios must lie in [0, 1), got {text!r}")
    return values


def cmd_export(args: argparse.Namespace) -> int:
    from sst.inference.export import export_run

    out = export_run(args.checkpoint, args.out, args.format, ratio=args.ratio, energy=args.energy)
    print(f"wrote {args.format} export to {out}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from sst.inference.loading import load_run
    from sst.inference.pruning import prune_study

    run = load_run(args.checkpoint, args.device)
    out = Path(args.out) if args.out else run.run_dir / "prune"
    curve = prune_study(run, out, args.ratios, args.split, args.max_batches)
    print(f"{'ratio':>6}  {curve['metric']}")
    for point in curve["points"]:
        print(f"{point['ratio']:>6.2f}  {point['value']:.4f}")
    print(f"wrote {out}/prune.json and {out}/prune.png")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from sst.inference.generate import generate_text
    from sst.inference.opening import open_for_inference

    run = open_for_inference(args.checkpoint, args.device)
    text = generate_text(run, args.prompt, args.max_new_tokens, args.top_k, args.temperature, args.seed)
    print(args.prompt + text)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from sst.inference.opening import open_for_inference

    run = open_for_inference(args.checkpoint, args.device)
    if args.lm_eval:
        from sst.integrations.lm_eval import evaluate_lm_tasks

        results = evaluate_lm_tasks(run, _split(args.lm_eval), args.max_batches or None)
        print(json.dumps({"checkpoint": str(run.checkpoint), "lm_eval": results}, indent=2, default=str))
        return 0
    if args.test_set:
        score = getattr(run.task, "evaluate_test_set", None)
        if score is None:
            raise UsageError(f"--test-set: the {run.config.task.name} task has no extra test sets")
        metrics = {k: v for spec in args.test_set for k, v in score(run.model, spec, args.max_batches).items()}
    else:
        metrics = run.task.evaluate(run.model, args.split, args.max_batches)
    print(json.dumps({"checkpoint": str(run.checkpoint), **metrics}, indent=2))
    return 0


def version() -> str:
    """The installed distribution's version (``sst.__version__`` is kept equal to it)."""
    try:
        return metadata.version("sparse-spectral-training")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, like every other error of the CLI."""

    def error(self, message: str):
        self.exit(2, f"sst: error: {one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sst", description="Sparse Spectral Training")
    parser.add_argument("--version", action="version", version=f"sst {version()}")
    debug_help = f"show the traceback of an error (also: {DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # --debug also after the command; SUPPRESS keeps a subcommand from resetting the global flag.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", parents=[common], help="train one run from a YAML config or preset")
    p.add_argument("config", help="YAML file or preset name (see `sst list`)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4 method.rank=16")
    p.add_argument("--out", help="output directory (same as out_dir=...)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last exactly")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", parents=[common], help="train several methods on identical data and report")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--methods", help="comma-separated, default full,lora,relora,galore,sst")
    p.add_argument("--rank", type=int, help="rank for every low-rank method")
    p.add_argument("--seeds", help="comma-separated seeds (mean and std are reported)")
    p.add_argument("--sweep", action="append", metavar="[METHOD:]KEY=V1,V2,...",
                   help="tune every method over these values (repeatable), chosen on validation; "
                        "METHOD:KEY gives one method its own grid (sst:train.lr=1e-2,3e-2,1e-1)")
    p.add_argument("--tune-seeds", type=int, default=1, metavar="N",
                   help="choose each sweep cell on the mean validation of the first N seeds (default 1)")
    p.add_argument("--tuned", help="fix each method's values from an earlier sweep: its results.json "
                                   "or a shipped <preset>.tuned.json name")
    p.add_argument("--out", help="output directory (default: the config's out_dir)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("list", parents=[common], help="list presets, tasks and methods")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("export", parents=[common],
                       help="merge a trained run to a plain (or low-rank / PIFA / HF / CoLA) model")
    p.add_argument("checkpoint", help="run directory (uses best/, else last/) or checkpoint directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", choices=["dense", "lowrank", "hf", "pifa", "cola"], default="dense",
                   help="pifa: pruned layers as pivot rows + coefficients (needs --ratio or --energy); "
                        "cola: a CoLA run with its A, B layers kept (the only format for CoLA runs)")
    kept = p.add_mutually_exclusive_group()
    kept.add_argument("--ratio", type=float, help="prune ratio: drop this share of each layer's singular values")
    kept.add_argument("--energy", type=float, help="keep the fewest singular values holding this share of sum S^2")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("prune", parents=[common],
                       help="metric against singular-value prune ratio (prune.json, prune.png)")
    p.add_argument("checkpoint", help="run directory or checkpoint directory")
    p.add_argument("--ratios", type=_ratio_list, default=[i / 10 for i in range(10)],
                   help="comma-separated prune ratios in [0, 1) (default 0,0.1,...,0.9)")
    p.add_argument("--out", help="output directory (default: RUN/prune)")
    p.add_argument("--split", default="val", help="evaluation split (val or test)")
    p.add_argument("--max-batches", type=int, default=0, help="evaluation batches per ratio (0: all)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("generate", parents=[common], help="continue a text prompt with a language-model run")
    p.add_argument("checkpoint", help="run directory, checkpoint directory or export (any --format)")
    p.add_argument("--prompt", default="", help="text to continue (empty: start a new document)")
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--top-k", type=int, default=1, help="sample among the k most likely tokens (1: greedy, 0: all)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0: greedy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", parents=[common], help="evaluate a run, checkpoint or export on a split")
    p.add_argument("checkpoint", help="run directory, checkpoint directory or export (any --format)")
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--max-batches", type=int, default=0, help="0: the whole split (with --lm-eval: examples per task)")
    p.add_argument("--lm-eval", metavar="TASKS",
                   help="comma-separated lm-evaluation-harness tasks (needs lm-eval and the tasks' data locally)")
    p.add_argument("--test-set", action="append", metavar="NAME_OR_PATH",
                   help="translation: score this test set instead of --split (a Multi30K name such as "
                        "test_2017_flickr, a path prefix of PREFIX.src/PREFIX.tgt, or SRC_FILE,TGT_FILE); repeatable")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_eval)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; dotted ``key=value`` overrides may stand anywhere, also after options."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def one_line(message: str) -> str:
    """``message`` with its line breaks (YAML errors, tracebacks of causes) folded into spaces."""
    return re.sub(r"\s*\n\s*", " ", str(message).strip())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return args.func(args)
    except (SSTError, FileNotFoundError) as err:  # FileNotFoundError: a missing input the OS names
        if debug:
            raise
        print(f"sst: error: {one_line(err)}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
