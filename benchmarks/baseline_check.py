"""Independent check of the harness's full-rank baseline: the same model on the same token stream,
trained by a plain PyTorch loop written here without any ``sst`` training code.

The plain loop uses torch.optim.AdamW (matrices decayed, vectors not), the same warm-up + cosine
schedule written out from its definition, gradient clipping, periodic validation on the first
batches and a final validation of the best state. Only the data (the task's batches) and the model
definition come from ``sst``; ``--model hf`` swaps in Hugging Face ``LlamaForCausalLM`` of the same
shape. Passes when the two validation perplexities agree within ``--tolerance`` (3%).

    python benchmarks/baseline_check.py --config lm-demo --tuned lm-demo
    python benchmarks/baseline_check.py --config tiny/lm --lr 3e-3 train.steps=20     # smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sst.config import load_config, to_dict
from sst.data.lm import pack
from sst.models.hf import lm_logits
from sst.tasks.lm import LMTask
from sst.train.compare import load_tuned
from sst.train.distributed import device_info
from sst.train.loop import train

RESULTS = Path(__file__).resolve().parent / "results"


def schedule(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up from 0 over ``warmup`` updates, then cosine decay to ``min_ratio``."""
    s = step + 1
    if warmup and s <= warmup:
        return s / warmup
    progress = min(1.0, (s - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def hf_llama(model: nn.Module, vocab: int, seq_len: int) -> nn.Module:
    """Hugging Face LlamaForCausalLM with the shape of our ``model`` (fresh initialisation)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=c.d_model, intermediate_size=c.d_ff,
                      num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
                      max_position_embeddings=seq_len, tie_word_embeddings=c.tie_embeddings)
    return LlamaForCausalLM(cfg)


def val_loss(model: nn.Module, tokens, seq_len: int, batch: int, max_batches: int = 0) -> float:
    """Mean next-token cross entropy over consecutive validation windows of ``seq_len`` + 1."""
    n = (len(tokens) - 1) // seq_len
    batches = math.ceil(n / batch)
    if max_batches:
        batches = min(batches, max_batches)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for b in range(batches):
            seqs = torch.from_numpy(pack(tokens, seq_len, torch.arange(b * batch, min((b + 1) * batch, n)).numpy()))
            logits = lm_logits(model, seqs[:, :-1]).float()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seqs[:, 1:].reshape(-1), reduction="sum")
            total += loss.item()
            count += seqs[:, 1:].numel()
    model.train()
    return total / count


def plain_run(config, use_hf: bool) -> dict:
    """Train with the hand-written loop; returns {"val_loss", "val_ppl", "seconds"}."""
    tc, c = config.train, config.task
    torch.manual_seed(config.seed)
    task = LMTask(c, config.seed, Path(config.out_dir))  # data and batches only
    model = task.build_model()
    if use_hf:
        model = hf_llama(model, task.data.vocab_size, c.seq_len)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=tc.betas, eps=tc.adam_eps)
    warmup = tc.warmup_steps or int(round(tc.warmup_ratio * tc.steps))
    best, best_state = float("inf"), None
    start = time.perf_counter()
    for step in range(tc.steps):
        for group in opt.param_groups:
            group["lr"] = tc.lr * schedule(step, tc.steps, warmup, tc.min_lr_ratio)
        for micro in range(tc.grad_accum):  # micro-batch i of the stream, as the harness reads it
            batch = task.train_batch(step * tc.grad_accum + micro)
            logits = lm_logits(model, batch["input_ids"]).float()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1))
            (loss / tc.grad_accum).backward()
        if tc.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        done = step + 1
        if (tc.eval_every and done % tc.eval_every == 0) or done == tc.steps:
            value = val_loss(model, task.data.val, c.seq_len, c.batch_size, tc.eval_batches)
            if value < best:
                best, best_state = value, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    final = val_loss(model, task.data.val, c.seq_len, c.batch_size)
    return {"val_loss": final, "val_ppl": math.exp(final), "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="lm-demo")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--lr", type=float, default=None, help="default: --tuned's full-rank choice, else the preset's")
    p.add_argument("--tuned", default="", help="results.json of a sweep, or a shipped <preset>.tuned.json name")
    p.add_argument("--model", choices=["ours", "hf"], default="ours")
    p.add_argument("--tolerance", type=float, default=0.03)
    p.add_argument("--runs", default="runs/bench/baseline_check")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    lr = args.lr
    if lr is None and args.tuned:
        lr = load_tuned(args.tuned)["full"]["train.lr"]
    overrides = ["method.name=full", "train.progress=false", "train.device=cpu", *args.overrides]
    overrides += [f"train.lr={lr}"] if lr is not None else []
    config = load_config(args.config, overrides + [f"out_dir={args.runs}/harness"])
    harness = train(config, resume="auto")
    plain = plain_run(config, args.model == "hf")
    ratio = plain["val_ppl"] / harness["val_ppl"]
    report = {
        "benchmark": "baseline_check", "model": args.model, **device_info("cpu"),
        "harness": {k: harness[k] for k in ("val_loss", "val_ppl", "train_seconds")}, "plain": plain,
        "ppl_ratio_plain_over_harness": ratio, "tolerance": args.tolerance,
        "agree": abs(ratio - 1.0) <= args.tolerance, "resolved_config": to_dict(config),
        "command": " ".join(["python", "benchmarks/baseline_check.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"baseline_check_{args.config.replace('/', '-')}_{args.model}{'_' + args.tag if args.tag else ''}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    text = (
        f"# Full-rank baseline check: {args.config}, lr {config.train.lr:g}, {args.model} model\n\n"
        f"| loop | val_loss | val_ppl |\n|---|---|---|\n"
        f"| sst harness (`sst.train.loop.train`) | {harness['val_loss']:.4f} | {harness['val_ppl']:.3f} |\n"
        f"| plain PyTorch loop (this script) | {plain['val_loss']:.4f} | {plain['val_ppl']:.3f} |\n\n"
        f"Perplexity ratio plain / harness: {ratio:.4f} (tolerance +-{100 * args.tolerance:.0f}%): "
        f"**{'agree' if report['agree'] else 'DISAGREE'}**.\n\nCommand: `{report['command']}`\n"
    )
    stem.with_suffix(".md").write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
