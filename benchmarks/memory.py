"""Peak training memory of each method, its breakdown, and what fits in 16 / 24 / 80 GiB.

Every cell (method x micro-batch x activation checkpointing x variant) runs in a process of its own
(this script with --child, JSON on stdout): it builds the LLaMA preset, takes --steps optimizer
steps of B x T random tokens through the loop's own open_run and train_step, and reports the peak
measured by sst.train.memory (CUDA max_memory_allocated; CPU resident-set growth + held tensors)
with its parts: trainable parameters, frozen tensors, gradients, optimizer state and the
activations saved for backward. What fits: parameter, frozen, gradient and optimizer bytes of
every preset come from the same open_run on the meta device (exact shapes, one meta optimizer
step), its saved activations from a meta forward scaled by the measured / meta ratio of the cell;
the predicted peak is those parts times the cell's measured peak / parts.

    python benchmarks/memory.py                       # llama-350m, micro-batch 1,4, checkpointing off,on
    python benchmarks/memory.py --model llama-20m --vocab-size 1000 --micro-batch 1 \\
        --activation-checkpointing off --variant sst:method.frozen_dtype=bfloat16
    python benchmarks/memory.py --micro-batch 4 --activation-checkpointing off \\
        --variant train.parallelism=fsdp          # FSDP2 (one process) next to the default DDP path
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from sst.build import BuiltRun
from sst.config import RunConfig, apply_overrides, build_config, to_dict
from sst.errors import ConfigError
from sst.methods import build_method
from sst.models.llama import LLAMA_PRESETS, build_llama
from sst.registry import METHODS
from sst.sizing import SKIP_ENV, MemoryEstimate, check_fits
from sst.tasks.lm import LMTask
from sst.train.compare import DEFAULT_METHODS, method_config
from sst.train.distributed import DistInfo, setup
from sst.train.loop import open_run, train_step
from sst.train.memory import memory_report, peak_memory_bytes, peak_memory_source, reset_peak, saved_activations

RESULTS = Path(__file__).resolve().parent / "results"
CHECKPOINTING = "train.activation_checkpointing"
BUDGETS_GIB = (16, 24, 80)
FIT_MICRO_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The check before a cell runs asks for its parts x this: the measured peaks ran 1.35x the parts
# (llama-20m, 4 x 256 tokens, CPU); a llama-1b cell that fitted the parts alone was OOM-killed.
PEAK_MARGIN = 1.5
PRESET_ORDER = list(LLAMA_PRESETS)  # smallest first
PARTS = ("trainable_param_bytes", "frozen_bytes", "grad_bytes", "optimizer_state_bytes", "saved_activation_bytes")


class Cell(NamedTuple):
    """One measurement: a method at a micro-batch, with or without checkpointing, with the
    variant's extra dotted overrides (``variant`` "" is the method's defaults)."""

    method: str
    micro_batch: int
    checkpointing: bool
    variant: str = ""
    overrides: tuple[str, ...] = ()

    @property
    def setting(self) -> tuple[str, bool, str]:
        return self.method, self.checkpointing, self.variant


def preset_rank(model: str, base_model: str, rank: int) -> int:
    """The rank at ``model``: d/8 with ``rank`` 0, else ``rank`` at ``base_model`` with r/d kept."""
    d, d_base = LLAMA_PRESETS[model]["d_model"], LLAMA_PRESETS[base_model]["d_model"]
    return d // 8 if rank == 0 else max(1, round(rank * d / d_base))


def cell_config(cell: Cell, model: str, rank: int, spec: dict) -> RunConfig:
    """The loop's config of ``cell`` at ``model``; ConfigError from the overrides (a key this
    version does not have) propagates for the caller to skip the cell."""
    base = METHODS.config_class("sst")(rank=rank, resample_every=spec["interval"])
    data = {
        "task": {"name": "lm", "model": model, "seq_len": spec["seq_len"], "batch_size": cell.micro_batch,
                 "vocab_size": spec["vocab_size"]},
        "method": to_dict(method_config(base, cell.method, rank)),
        "train": {"steps": spec["steps"], "lr": 1e-3, "schedule": "constant", "grad_clip": 1.0,
                  "log_every": 10**9, "progress": False, "device": spec["device"], "keep_best": False},
        "seed": spec["seed"],
    }
    build_config(data)  # the cell without its extras must always build
    extras = ([f"{CHECKPOINTING}=true"] if cell.checkpointing else []) + list(cell.overrides)
    return build_config(apply_overrides(data, extras))


def _built(config: RunConfig, device: torch.device) -> BuiltRun:
    """The preset with the method's layers, built on ``device`` (the CPU, or meta: no memory)."""
    task = config.task
    with torch.device(device):
        model = build_llama(task.model, task.vocab_size, max_seq_len=task.seq_len)
        method = build_method(config.method, config.seed)
        model = method.prepare_model(model)
    return BuiltRun(LMTask(task, config.seed, Path(".")), model, method)


class FlashOnMeta(TorchFunctionMode):
    """Route mask-free scaled_dot_product_attention on meta tensors to the fused flash kernel.

    Meta tensors have no fused-kernel choice and take the math path, which saves the B x H x T x T
    attention probabilities for backward; the CPU and CUDA run causal training attention through a
    flash kernel that saves only q, k, v, the output and its log-sum-exp (B x H x T).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func is F.scaled_dot_product_attention and args[0].is_meta and kwargs.get("attn_mask") is None
                and not kwargs.get("dropout_p") and not kwargs.get("enable_gqa")):
            q, k, v = args[:3]
            flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
            return flash(q, k, v, 0.0, kwargs.get("is_causal", False), scale=kwargs.get("scale"))[0]
        return func(*args, **kwargs)


def meta_breakdown(config: RunConfig) -> dict:
    """Bytes of the parts at ``config``'s preset from the loop's open_run on the meta device (so
    whatever the loop applies, such as activation checkpointing, applies here): parameters,
    gradients, optimizer state after one step, saved activations at 1 and 2 sequences."""
    meta = torch.device("meta")
    built = _built(config, meta)
    with tempfile.TemporaryDirectory() as tmp:
        run = open_run(dataclasses.replace(config, out_dir=tmp), DistInfo(device=meta), built=built)
        run.logger.close()
    run.model.train()
    saved = []
    for batch_size in (1, 2):
        ids = torch.zeros(batch_size, config.task.seq_len, dtype=torch.long, device=meta)
        with FlashOnMeta(), saved_activations(run.model) as found:
            built.task.loss(run.runner, {"input_ids": ids, "labels": ids})
        saved.append(found.bytes)
    for p in run.model.parameters():  # gradients of the right shapes, without a (recomputing) backward
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    run.optimizer.step()
    return {**memory_report(run.model, run.optimizer), "saved_one_sequence": saved[0],
            "saved_per_sequence": saved[1] - saved[0]}


def meta_saved(meta: dict, micro_batch: int) -> int:
    """Saved activations at ``micro_batch`` sequences: linear in the batch at a fixed length."""
    return meta["saved_one_sequence"] + (micro_batch - 1) * meta["saved_per_sequence"]


def check_cell_fits(cell: Cell, meta: dict, device: torch.device, model: str) -> None:
    """ConfigError naming the cell when its estimate (the meta parts x ``PEAK_MARGIN``) cannot fit
    ``device``'s free memory."""
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return
    parts = (meta["param_bytes"], meta["grad_bytes"], meta["optimizer_state_bytes"], 0,
             meta_saved(meta, cell.micro_batch))
    estimate = MemoryEstimate(*(int(PEAK_MARGIN * n) for n in parts))
    try:
        check_fits(estimate, device, None)
    except ConfigError as err:
        raise ConfigError(f"--model {model} --micro-batch {cell.micro_batch} ({cell.method}"
                          f"{' ' + cell.variant if cell.variant else ''}): {err} (the estimate has a "
                          f"{PEAK_MARGIN}x margin for temporaries); choose a smaller --model or --micro-batch") from None


def _skip_reason(err: ConfigError) -> str:
    return f"skipped, not in this version: {str(err).split('; allowed:')[0]}"


def child(spec: dict) -> dict:
    """Measure one cell in this process: build, check it fits, ``spec['steps']`` steps, the peak."""
    cell = Cell(spec["method"], spec["micro_batch"], spec["checkpointing"], spec["variant"],
                tuple(spec["overrides"]))
    device = torch.device(spec["device"])
    try:
        config = cell_config(cell, spec["model"], spec["rank"], spec)
    except ConfigError as err:
        return {"skipped": _skip_reason(err)}
    check_cell_fits(cell, meta_breakdown(config), device, spec["model"])
    torch.manual_seed(spec["seed"])
    built = _built(config, torch.device("cpu"))
    gen = torch.Generator().manual_seed(spec["seed"])
    tokens = torch.randint(0, spec["vocab_size"], (cell.micro_batch, spec["seq_len"] + 1), generator=gen)
    batch = {"input_ids": tokens[:, :-1], "labels": tokens[:, 1:]}
    with tempfile.TemporaryDirectory() as tmp:
        # train.parallelism=fsdp (a --variant): FSDP2 in this one process, as `sst train` would
        dist = setup(str(device), "fsdp") if config.train.parallelism == "fsdp" else DistInfo(device=device)
        run = open_run(dataclasses.replace(config, out_dir=tmp), dist, built=built)
        held = memory_report(run.model, run.optimizer)
        reset_peak(device, held["param_bytes"] + held["optimizer_state_bytes"])  # as the loop's fit()
        start = time.perf_counter()
        for _ in range(spec["steps"]):
            train_step(run, batch_for=lambda index: batch)
        seconds = time.perf_counter() - start
        peak = peak_memory_bytes(device)
        run.logger.close()
    parts = {**memory_report(run.model, run.optimizer), "saved_activation_bytes": run.saved_activation_bytes}
    return {"peak_memory_bytes": peak, "peak_memory_source": peak_memory_source(device), **parts,
            "other_bytes": peak - sum(parts[k] for k in PARTS), "seconds": seconds,
            "rank": getattr(config.method, "rank", None)}


# glibc keeps freed blocks below its (growing, up to 32 MiB) mmap threshold in the heap, so the
# resident set also counts memory no tensor holds any more. A 64 KiB threshold returns every larger
# block at once: the high-water mark then tracks live tensor bytes, the CPU analogue of CUDA's
# max_memory_allocated (which leaves the caching allocator's reserve out). --allocator default
# measures with glibc's own settings instead (what a plain process would show).
LIVE_BYTES_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def run_child(spec: dict, allocator: str = "live") -> dict:
    """``child(spec)`` in a fresh process of this script; {"error": ...} when it fails."""
    env = {**os.environ, **(LIVE_BYTES_ENV if allocator == "live" else {})}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def what_fits(setting_meta: dict[str, dict], row: dict, measured_model: str) -> dict:
    """Predicted peak of every preset x micro-batch for one method setting, from its measured row
    and the meta parts; {budget GiB: "<preset> x <micro-batch>" or "none"} and the details."""
    measured_meta = setting_meta[measured_model]
    state = lambda m: sum(m[k] for k in PARTS[:-1])  # noqa: E731
    act_scale = row["saved_activation_bytes"] / max(meta_saved(measured_meta, row["micro_batch"]), 1)
    overhead = row["peak_memory_bytes"] / max(state(row) + row["saved_activation_bytes"], 1)
    predicted = {model: {b: int(overhead * (state(m) + act_scale * meta_saved(m, b))) for b in FIT_MICRO_BATCHES}
                 for model, m in setting_meta.items()}
    best = {}
    for gib in BUDGETS_GIB:
        fits = [(model, b) for model in PRESET_ORDER if model in predicted for b in FIT_MICRO_BATCHES
                if predicted[model][b] <= gib * 2**30]
        largest = fits[-1][0] if fits else None
        batch = max((b for m, b in fits if m == largest), default=0)
        best[str(gib)] = f"{largest} x {batch}{'+' if batch == FIT_MICRO_BATCHES[-1] else ''}" if fits else "none"
    return {"best": best, "activation_scale": act_scale, "peak_over_parts": overhead, "predicted_bytes": predicted}


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"# Peak training memory: {s['model']} (d = {s['d_model']}), vocabulary {s['vocab_size']}, "
        f"rank {s['rank']}, micro-batch x {s['seq_len']} tokens, {report['device_name']}",
        "",
        f"{s['steps']} optimizer steps per cell, each cell in a process of its own; peak from "
        f"{', '.join(report['peak_sources']) or '-'} (on the CPU: resident-set growth from the run's start "
        "plus the tensors held then; float32; allocator: "
        + ("glibc returns freed blocks at once, so the peak tracks live tensor bytes"
           if s.get("allocator", "live") == "live" else "glibc as is, so the peak also holds freed heap memory")
        + "). torch " + report["torch"] + ".",
        "",
        "| method | variant | checkpointing | micro-batch | peak MiB | x full | trainable | frozen | grads "
        "| optimizer | saved activations | other |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        head = f"| {r['method']} | {r['variant'] or '-'} | {'on' if r['checkpointing'] else 'off'} | {r['micro_batch']} "
        if "peak_memory_bytes" not in r:
            lines.append(head + f"| {r.get('skipped') or 'error: ' + r.get('error', '?')} |" + " |" * 7)
            continue
        ratio = f"{r['peak_ratio']:.2f}" if r.get("peak_ratio") is not None else "-"
        lines.append(head + f"| {mib(r['peak_memory_bytes'])} | {ratio} | "
                     + " | ".join(mib(r[k]) for k in PARTS) + f" | {mib(r['other_bytes'])} |")
    lines += ["", "other = peak - the five parts: temporaries of backward and of the optimizer step, and on "
              "the CPU the allocator's and Python's own growth; negative when the parts never all live at "
              "once (saved activations are freed as the gradients appear, so a peak in the optimizer step "
              "holds none of them)."]
    for note in report["notes"]:
        lines += ["", f"- {note}"]
    if report["what_fits"]:
        lines += [
            "", "## What fits (largest preset x micro-batch, extrapolated)", "",
            f"Predicted peak = (parameters + frozen + gradients + optimizer state of the preset, from an exact "
            f"meta-device build) + saved activations (meta forward x the measured / meta ratio), times the "
            f"cell's measured peak / parts; rank r/d kept; {s['seq_len']} tokens per sequence; nominal GiB "
            "with no allowance for a CUDA context or fragmentation. From the largest measured micro-batch.",
            "", "| method | variant | checkpointing | " + " | ".join(f"{g} GiB" for g in BUDGETS_GIB)
            + " | activations measured / meta | peak / parts |",
            "|---|---|---|" + "---|" * (len(BUDGETS_GIB) + 2),
        ]
        for f in report["what_fits"]:
            lines.append(f"| {f['method']} | {f['variant'] or '-'} | {'on' if f['checkpointing'] else 'off'} | "
                         + " | ".join(f["best"][str(g)] for g in BUDGETS_GIB)
                         + f" | {f['activation_scale']:.2f} | {f['peak_over_parts']:.2f} |")
    lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def parse_variants(texts: list[str]) -> list[tuple[str, str | None, tuple[str, ...]]]:
    """``[method:]key=value[;key=value]`` -> (label, method or None for all, overrides)."""
    variants = []
    for text in texts:
        method, rest = text.split(":", 1) if ":" in text.split("=", 1)[0] else ("", text)
        overrides = tuple(o for o in rest.split(";") if o)
        if not overrides or any("=" not in o for o in overrides):
            raise ConfigError(f"--variant {text!r}: expected [method:]key=value[;key=value]")
        if method and method not in METHODS.configs:
            raise ConfigError(f"--variant {text!r}: unknown method {method!r}; choose from {sorted(METHODS.configs)}")
        variants.append((text, method or None, overrides))
    return variants


def _switches(text: str, flag: str) -> list[bool]:
    values = {"off": False, "on": True}
    chosen = [v.strip() for v in text.split(",") if v.strip()]
    if not chosen or any(v not in values for v in chosen):
        raise ConfigError(f"{flag} {text!r}: expected a comma list of off,on")
    return [values[v] for v in chosen]


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} {text!r}: expected a comma list of positive integers")
    return values


def cells(args) -> list[Cell]:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS.configs]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown {unknown}; choose from {sorted(METHODS.configs)}")
    variants = [("", None, ())] + parse_variants(args.variant)
    return [Cell(m, b, ck, label, overrides)
            for label, only, overrides in variants for m in methods if only in (None, m)
            for ck in _switches(args.activation_checkpointing, "--activation-checkpointing")
            for b in _ints(args.micro_batch, "--micro-batch")]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="llama-350m", choices=list(LLAMA_PRESETS))
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--micro-batch", default="1,4", help="comma list of sequences per micro-batch")
    p.add_argument("--activation-checkpointing", default="off,on", help="off, on or off,on")
    p.add_argument("--variant", action="append", default=[],
                   help="extra overrides for one method or all: [method:]key=value[;key=value] (repeatable)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--rank", type=int, default=0, help="0: d_model / 8 (kept as r/d at other presets)")
    p.add_argument("--steps", type=int, default=2, help="optimizer steps per cell")
    p.add_argument("--interval", type=int, default=200, help="method event period (none within --steps)")
    p.add_argument("--fit-presets", default=",".join(LLAMA_PRESETS), help="presets of the what-fits table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--allocator", choices=("live", "default"), default="live",
                   help="CPU: live = glibc returns freed blocks at once (peak ~ live tensor bytes); default = glibc as is")
    p.add_argument("--tag", default="", help="file-name suffix after the device")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    fit_presets = [m for m in args.fit_presets.split(",") if m]
    if any(m not in LLAMA_PRESETS for m in fit_presets):
        raise ConfigError(f"--fit-presets {args.fit_presets!r}: choose from {list(LLAMA_PRESETS)}")
    spec = {"model": args.model, "vocab_size": args.vocab_size, "seq_len": args.seq_len, "steps": args.steps,
            "interval": args.interval, "seed": args.seed, "device": str(device),
            "rank": preset_rank(args.model, args.model, args.rank)}
    grid, metas, skipped = cells(args), {}, {}
    for cell in grid:  # refuse what cannot fit before anything is allocated
        key = cell.setting
        if key not in metas and key not in skipped:
            try:
                metas[key] = {args.model: meta_breakdown(cell_config(cell, args.model, spec["rank"], spec))}
            except ConfigError as err:
                skipped[key] = _skip_reason(err)
        if key in metas:
            check_cell_fits(cell, metas[key][args.model], device, args.model)
    start, rows = time.perf_counter(), []
    for cell in grid:
        base = {"method": cell.method, "micro_batch": cell.micro_batch, "checkpointing": cell.checkpointing,
                "variant": cell.variant}
        result = ({"skipped": skipped[cell.setting]} if cell.setting in skipped
                  else run_child({**spec, **base, "overrides": list(cell.overrides)}, args.allocator))
        rows.append({**base, **result})
        print(f"{cell.method:7s} B={cell.micro_batch} ckpt={'on' if cell.checkpointing else 'off'} "
              f"{cell.variant or '-'}: " + (f"peak {mib(result['peak_memory_bytes'])} MiB"
                                          if "peak_memory_bytes" in result else str(result)), flush=True)
    measured = [r for r in rows if "peak_memory_bytes" in r]
    for r in measured:
        full = next((f for f in measured if f["method"] == "full" and f["micro_batch"] == r["micro_batch"]
                     and f["checkpointing"] == r["checkpointing"] and f["variant"] in (r["variant"], "")), None)
        r["peak_ratio"] = r["peak_memory_bytes"] / full["peak_memory_bytes"] if full else None
    notes = sorted({r["skipped"] for r in rows if r.get("skipped")})
    for on in (r for r in measured if r["checkpointing"]):
        plain = next((x for x in measured if not x["checkpointing"] and x["method"] == on["method"]
                      and x["micro_batch"] == on["micro_batch"] and x["variant"] == on["variant"]), None)
        if plain and on["saved_activation_bytes"] >= plain["saved_activation_bytes"]:
            notes.append(f"{on['method']} B={on['micro_batch']}: checkpointing on saved no activations: "
                         "check that the loop applies it")
    fits = []
    setting = lambda r: (r["method"], r["checkpointing"], r["variant"])  # noqa: E731
    for key in dict.fromkeys(setting(r) for r in measured):
        row = max((r for r in measured if setting(r) == key), key=lambda r: r["micro_batch"])
        cell = next(c for c in grid if c.setting == key)
        for model in fit_presets:
            if model not in metas[key]:
                metas[key][model] = meta_breakdown(
                    cell_config(cell, model, preset_rank(model, args.model, args.rank), spec))
        table = what_fits({m: metas[key][m] for m in {*fit_presets, args.model}}, row, args.model)
        fits.append({"method": key[0], "checkpointing": key[1], "variant": key[2], **table})
    d = LLAMA_PRESETS[args.model]["d_model"]
    report = {
        "benchmark": "memory",
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("out", "child")}, "d_model": d,
                     "rank": spec["rank"], "data": "uniform random token ids"},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
        "wall_seconds": time.perf_counter() - start,
        "peak_sources": sorted({r["peak_memory_source"] for r in measured}),
        "command": shlex.join(["python", "benchmarks/memory.py", *(argv if argv is not None else sys.argv[1:])]),
        "rows": rows, "notes": notes, "what_fits": fits,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"memory_{args.model}_{device.type}{'_' + args.tag if args.tag else ''}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:  # a bad flag or a cell that cannot fit: one line, no traceback
        sys.exit(f"benchmarks/memory.py: {err}")
