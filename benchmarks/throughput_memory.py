"""Step time, throughput and state memory of full / LoRA / ReLoRA* / GaLore / SST on one LLaMA model.

Every method trains the same preset at the same rank (default r = d/8) on random token batches,
each step through the training loop's own ``train_step`` (lr schedule x method multiplier,
clipping, optimizer, ``method.after_step``). All methods live in one process and step in turn
(interleaved), so a noisy shared machine slows them alike; medians are reported. Measured peak
memory, each method in its own process, is ``benchmarks/memory.py``'s job. Each method's
interval (SST re-sampling, ReLoRA* merge, GaLore projector update) fires once per ``--interval``
steps, so one event falls inside the timed window; SST's re-SVD (once per round of ceil(k / r)
iterations) is timed on its own and amortised over its real period. Issue targets: SST step time
<= 1.15x full-rank (CPU llama-60m, 8 x 256), SST optimizer state <= 1/4 of full-rank's in the blocks.

    python benchmarks/throughput_memory.py                      # llama-130m on CUDA, tiny on CPU
    python benchmarks/throughput_memory.py --model llama-20m --steps 20 --warmup 3
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from sst.build import BuiltRun
from sst.config import RunConfig, build_config, to_dict
from sst.methods import build_method
from sst.methods.sst import SSTMethod
from sst.models.llama import LLAMA_PRESETS, build_llama
from sst.registry import METHODS
from sst.tasks.lm import LMTask
from sst.train.compare import DEFAULT_METHODS, method_config
from sst.train.distributed import DistInfo
from sst.train.loop import open_run, train_step
from sst.train.memory import count_parameters, memory_report

RESULTS = Path(__file__).resolve().parent / "results"
BLOCKS = "layers."  # parameter-name prefix of the transformer blocks (the target layers)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def block_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Optimizer-state bytes of the parameters inside the transformer blocks."""
    names = {id(p): n for n, p in model.named_parameters()}
    total = 0
    for p, state in optimizer.state.items():
        if names.get(id(p), "").startswith(BLOCKS):
            total += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    return total


def run_config(name: str, args, device: torch.device) -> RunConfig:
    """The loop's config for one method: constant lr, clipping at 1, one event per ``--interval``."""
    d = LLAMA_PRESETS[args.model]["d_model"]
    base = METHODS.config_class("sst")(rank=args.rank or d // 8, resample_every=args.interval)
    return build_config({
        "task": {"name": "lm", "model": args.model, "seq_len": args.seq_len, "batch_size": args.batch_size,
                 "vocab_size": args.vocab_size},
        "method": to_dict(method_config(base, name, base.rank)),
        "train": {"steps": args.warmup + args.steps, "lr": args.lr, "schedule": "constant", "grad_clip": 1.0,
                  "log_every": 10**9, "progress": False, "device": str(device), "keep_best": False},
        "seed": args.seed,
    })


def open_method(name: str, args, device: torch.device, tmp: str):
    """Build one method's run through the loop's own ``open_run`` (model, method, optimizer)."""
    config = run_config(name, args, device)
    config.out_dir = str(Path(tmp) / name)
    torch.manual_seed(args.seed)
    model = build_llama(args.model, args.vocab_size, max_seq_len=args.seq_len)
    method = build_method(config.method, args.seed)
    built = BuiltRun(LMTask(config.task, args.seed, Path(".")), method.prepare_model(model), method)
    return config, open_run(config, DistInfo(device=device), built=built)


def timed_step(run, batches, device: torch.device) -> tuple[float, float, bool]:
    """(seconds, loss, whether the method acted) of one ``train_step``."""
    sync(device)
    start = time.perf_counter()
    result = train_step(run, batch_for=lambda index: batches[index % len(batches)])
    sync(device)
    return time.perf_counter() - start, result.loss_sum / result.units, bool(result.events)


def measure_all(names: list[str], args, device: torch.device) -> list[dict]:
    """Every method built side by side and stepped round-robin (full, lora, ..., full, lora, ...),
    so that the load of a shared machine falls on all methods alike; medians of the timed steps."""
    gen = torch.Generator().manual_seed(args.seed)
    batches = [torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len + 1), generator=gen)
               for _ in range(4)]
    batches = [{"input_ids": b[:, :-1], "labels": b[:, 1:]} for b in batches]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: open_method(name, args, device, tmp) for name in names}
        times = {name: [] for name in names}
        losses = {name: [] for name in names}
        events = dict.fromkeys(names, 0)
        for step in range(args.warmup + args.steps):
            for name, (_, run) in runs.items():
                seconds, loss, acted = timed_step(run, batches, device)
                if step >= args.warmup:
                    times[name].append(seconds)
                    losses[name].append(loss)
                    events[name] += acted
        rows = []
        for name, (config, run) in runs.items():
            model, optimizer, method = run.model, run.optimizer, run.built.method
            trainable, total = count_parameters(model)
            mean_s, median_s = statistics.fmean(times[name]), statistics.median(times[name])
            row = {
                "method": name, "rank": getattr(config.method, "rank", None), "trainable_params": trainable,
                "total_params": total,
                "step_ms_mean": 1e3 * mean_s, "step_ms_median": 1e3 * median_s,
                "step_ms_max": 1e3 * max(times[name]), "events_in_window": events[name],
                "tokens_per_second": args.batch_size * args.seq_len / median_s,
                **memory_report(model, optimizer),
                "block_optimizer_state_bytes": block_state_bytes(model, optimizer),
                "final_loss": losses[name][-1], "finite": all(math.isfinite(x) for x in losses[name]),
            }
            if isinstance(method, SSTMethod):  # one re-SVD of every layer, timed alone
                layers = method.layers(model)
                sync(device)
                start = time.perf_counter()
                for layer in layers:
                    layer.resvd_(getattr(torch, config.method.svd_dtype))
                sync(device)
                period = args.interval * math.ceil(layers[0].k / layers[0].rank)
                row["resvd_all_layers_ms"] = 1e3 * (time.perf_counter() - start)
                row["resvd_period_steps"] = period
                row["step_ms_with_amortised_resvd"] = row["step_ms_median"] + row["resvd_all_layers_ms"] / period
            rows.append(row)
            run.logger.close()
        del runs
    gc.collect()
    return rows


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        (f"# Throughput and memory: {s['model']} (d = {s['d_model']}), rank {s['rank']}, "
         f"{s['batch_size']} x {s['seq_len']} tokens per step, {report['device_name']}"),
        "",
        (f"{s['steps']} timed steps after {s['warmup']} warm-up steps; method events every "
         f"{s['interval']} steps (one inside the window); autocast: {s['autocast']}; "
         f"torch {report['torch']}."),
        "",
        ("| method | trainable params | step ms (median) | x full | step ms (mean) | tokens/s "
         "| param MiB | grad MiB | opt state MiB | block opt state MiB | x full |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['method']} | {r['trainable_params']:,} | {r['step_ms_median']:.1f} | {r['step_ratio']:.2f} "
            f"| {r['step_ms_mean']:.1f} | {r['tokens_per_second']:,.0f} | {mib(r['param_bytes'])} | {mib(r['grad_bytes'])} "
            f"| {mib(r['optimizer_state_bytes'])} | {mib(r['block_optimizer_state_bytes'])} "
            f"| {r['block_state_ratio']:.3f} |"
        )
    t = report["targets"]
    lines += [
        "",
        (f"SST re-SVD of all layers: {t['sst_resvd_ms']:.1f} ms once every {t['sst_resvd_period_steps']} "
         f"steps; step time with it amortised: {t['sst_step_ms_with_resvd']:.2f} ms."),
        "",
        (f"- SST step time / full-rank: {t['sst_step_ratio']:.3f}, {t['sst_step_ratio_with_resvd']:.3f} with "
         f"the re-SVD amortised (target <= 1.15): "
         f"**{'holds' if t['step_time_target_met'] else 'does not hold'}**"),
        (f"- SST block optimizer state / full-rank: {t['sst_block_state_ratio']:.3f} (target <= 0.25): "
         f"**{'holds' if t['state_target_met'] else 'does not hold'}**"),
        "",
        f"Command: `{report['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="LLaMA preset (default llama-130m on CUDA, tiny on CPU)")
    p.add_argument("--rank", type=int, default=0, help="0: d_model / 8")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=0, help="0: 64 on CUDA, 4 on CPU")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=200, help="timed optimizer steps")
    p.add_argument("--interval", type=int, default=200, help="SST resample / ReLoRA merge / GaLore update period")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default); 1 is steadiest on a shared machine")
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON and Markdown results")
    p.add_argument("--tag", default="", help="file-name suffix (default: cuda or cpu)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    args.model = args.model or ("llama-130m" if device.type == "cuda" else "tiny")
    args.batch_size = args.batch_size or (64 if device.type == "cuda" else 4)
    d = LLAMA_PRESETS[args.model]["d_model"]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    start = time.perf_counter()
    rows = measure_all(args.methods.split(","), args, device)
    for row in rows:
        print(f"{row['method']:7s} {row['step_ms_median']:8.2f} ms/step (median)  "
              f"{row['tokens_per_second']:10.0f} tok/s  opt {row['optimizer_state_bytes'] / 2**20:8.1f} MiB", flush=True)
    full = next((r for r in rows if r["method"] == "full"), rows[0])
    for r in rows:
        r["step_ratio"] = r["step_ms_median"] / full["step_ms_median"]
        r["block_state_ratio"] = r["block_optimizer_state_bytes"] / full["block_optimizer_state_bytes"]
    sst = next((r for r in rows if r["method"] == "sst"), None)
    targets = {}
    if sst is not None:
        targets = {
            "sst_step_ratio": sst["step_ratio"],
            "sst_step_ratio_with_resvd": sst["step_ms_with_amortised_resvd"] / full["step_ms_median"],
            "sst_step_ms_with_resvd": sst["step_ms_with_amortised_resvd"],
            "sst_resvd_ms": sst["resvd_all_layers_ms"], "sst_resvd_period_steps": sst["resvd_period_steps"],
            "sst_block_state_ratio": sst["block_state_ratio"],
            "step_time_target_met": sst["step_ms_with_amortised_resvd"] / full["step_ms_median"] <= 1.15,
            "state_target_met": sst["block_state_ratio"] <= 0.25,
        }
    tag = args.tag or device.type
    report = {
        "benchmark": "throughput_memory",
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("out", "tag")},
                     "d_model": d, "rank": args.rank or d // 8,
                     "autocast": "bfloat16" if device.type == "cuda" else "none (float32)",
                     "tokens_per_step": args.batch_size * args.seq_len, "data": "uniform random token ids"},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
        "wall_seconds": time.perf_counter() - start,
        "steps": args.warmup + args.steps, "tokens_per_method": (args.warmup + args.steps) * args.batch_size * args.seq_len,
        "command": " ".join(["python", "benchmarks/throughput_memory.py", *(argv if argv is not None else sys.argv[1:])]),
        "rows": rows, "targets": targets,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"throughput_memory_{tag}.json").write_text(json.dumps(report, indent=2))
    (out / f"throughput_memory_{tag}.md").write_text(markdown(report) if targets else json.dumps(rows, indent=2))
    print(markdown(report) if targets else "")
    return report


if __name__ == "__main__":
    main()
