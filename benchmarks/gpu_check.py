"""The GPU rows of the memory / speed protocol in one run sized for ten minutes on one H100 / H200.

Stages, cheapest first, each skipped once ``--budget-minutes`` is spent (a lent device is scarce):
1. isolated step time: ``throughput_memory.py`` on ``--model`` (all methods interleaved);
2. in-loop step time: the real training loop (``sst.train.loop.train``) for full-rank and SST on
   ``--loop-preset``, run full, sst, full, sst so that drift falls on both; each method's faster
   run counts. The target: SST / full <= 1.15, and within 10% of the isolated ratio;
3. peak memory: ``memory.py`` for each of ``--memory-models`` (every method, SST with bf16 frozen
   factors too, activation checkpointing on).
Writes benchmarks/results/gpu_check_<tag>.{json,md} (and each stage's own result files).

    python benchmarks/gpu_check.py                                      # on the GPU machine
    python benchmarks/gpu_check.py --model tiny --loop-preset tiny/lm --loop-steps 4 \\
        --memory-models tiny --throughput-steps 3 --device cpu --tag cpu_smoke  # CPU smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from sst.config import load_config
from sst.train.distributed import device_info
from sst.train.loop import train

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_loop(preset: str, steps: int, runs_dir: Path, overrides: list[str]) -> dict:
    """Seconds per optimizer step of full-rank and SST in the real loop: the faster of two runs each."""
    per_step: dict[str, list[float]] = {"full": [], "sst": []}
    for repeat in range(2):
        for name in ("full", "sst"):
            config = load_config(preset, [f"method.name={name}", f"train.steps={steps}", "train.eval_every=0",
                                          "train.save_every=0", "train.progress=false", "train.keep_best=false",
                                          f"out_dir={runs_dir / f'{name}{repeat}'}", *overrides])
            result = train(config)
            per_step[name].append(result["train_seconds"] / result["steps"])
    full, sst = min(per_step["full"]), min(per_step["sst"])
    return {"preset": preset, "steps": steps, "seconds_per_step": per_step, "sst_ratio": sst / full}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="llama-130m", help="preset of the isolated step-time stage")
    p.add_argument("--throughput-steps", type=int, default=60)
    p.add_argument("--loop-preset", default="lm-llama130m")
    p.add_argument("--loop-steps", type=int, default=60)
    p.add_argument("--loop-override", action="append", default=[], help="extra overrides of the loop runs")
    p.add_argument("--memory-models", default="llama-130m,llama-350m,llama-1b")
    p.add_argument("--micro-batch", default="8")
    p.add_argument("--budget-minutes", type=float, default=8.5)
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", default="runs/bench/gpu_check")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--tag", default="", help="file-name suffix (default: cuda or cpu)")
    args = p.parse_args(argv)
    env = device_info(args.device)
    tag = args.tag or env["device"]
    out = Path(args.out)
    start = time.perf_counter()
    report: dict = {"benchmark": "gpu_check", **env, "skipped": [],
                    "command": " ".join(["python", "benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])])}

    def in_budget(stage: str) -> bool:
        if time.perf_counter() - start < args.budget_minutes * 60:
            return True
        report["skipped"].append(stage)
        return False

    if in_budget("throughput"):
        iso = _load("throughput_memory").main([
            "--model", args.model, "--steps", str(args.throughput_steps), "--interval", str(args.throughput_steps),
            "--warmup", "5", "--device", args.device, "--out", str(out), "--tag", f"{tag}_isolated"])
        report["isolated_sst_ratio"] = iso["targets"]["sst_step_ratio"]
    if in_budget("in_loop"):
        report["in_loop"] = in_loop(args.loop_preset, args.loop_steps, Path(args.runs),
                                    [f"train.device={args.device}", *args.loop_override])
    if "isolated_sst_ratio" in report and "in_loop" in report:
        loop = report["in_loop"]["sst_ratio"]
        report["loop_vs_isolated"] = loop / report["isolated_sst_ratio"]
        report["targets"] = {"in_loop_le_1_15": loop <= 1.15,
                             "agree_within_10pct": abs(report["loop_vs_isolated"] - 1.0) <= 0.10}
    report["memory"] = {}
    for model in [m for m in args.memory_models.split(",") if m]:
        if not in_budget(f"memory {model}"):
            continue
        mem = _load("memory").main([
            "--model", model, "--micro-batch", args.micro_batch, "--activation-checkpointing", "on",
            "--variant", "sst:method.frozen_dtype=bfloat16", "--device", args.device, "--out", str(out),
            "--tag", "gpu_check"])
        report["memory"][model] = {f"{r['method']}{' bf16' if r.get('variant') else ''}": r.get("peak_ratio")
                                   for r in mem.get("rows", [])}
    report["wall_seconds"] = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"gpu_check_{tag}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    stem.with_suffix(".md").write_text(markdown(report))
    print(stem.with_suffix(".md").read_text())
    return report


def markdown(report: dict) -> str:
    lines = [f"# GPU check: {report['device_name']}", ""]
    if "isolated_sst_ratio" in report:
        lines.append(f"- Isolated step time SST / full-rank: {report['isolated_sst_ratio']:.3f}")
    if "in_loop" in report:
        loop = report["in_loop"]
        lines.append(f"- In the real loop ({loop['preset']}, {loop['steps']} steps, faster of two runs each): "
                     f"SST / full-rank {loop['sst_ratio']:.3f}; seconds per step {loop['seconds_per_step']}")
    if "targets" in report:
        t = report["targets"]
        lines.append(f"- In-loop / isolated: {report['loop_vs_isolated']:.3f} (agree within 10%: "
                     f"{'yes' if t['agree_within_10pct'] else 'no'}); in-loop <= 1.15: "
                     f"{'yes' if t['in_loop_le_1_15'] else 'no'}")
    for model, ratios in report["memory"].items():
        lines.append(f"- Peak memory / full-rank, {model}, checkpointing on: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items() if v is not None))
    if report["skipped"]:
        lines.append(f"- Skipped (budget spent): {', '.join(report['skipped'])}")
    lines += ["", f"Wall time {report['wall_seconds']:.0f} s. Command: `{report['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
