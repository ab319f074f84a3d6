"""Causal language-model pre-training: predict token t+1 from tokens <= t.

Loss = mean over tokens of -log softmax(logits)[target] (cross entropy, computed in float32);
validation perplexity = exp(token-weighted mean loss). Models: our LLaMA presets, or Hugging
Face LLaMA/OPT built from configs ("hf:llama-130m", "hf:opt-125m").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sst.errors import UsageError
from sst.schema import ConfigError, check_range
from sst.data.hf_dataset import dataset_source, is_hf_dataset, is_streamed
from sst.data.lm import LMData, check_sequences, load_lm_data, pack
from sst.models.hf import HF_MODELS, OPT_PRESETS, build_hf_model, lm_logits
from sst.models.llama import LLAMA_PRESETS, build_llama
from sst.models.modes import eval_mode
from sst.tasks.base import Task, TaskConfig

# Rough upper bound of characters per BPE token, to size how much text a streamed source reads.
_CHARS_PER_TOKEN = 8


def _preset_heads(model: str) -> tuple[int, int, bool]:
    """(d_model, n_heads, uses rotary embeddings) of a valid ``LMTaskConfig.model`` name."""
    name = model.removeprefix("hf:")
    if name in OPT_PRESETS:
        return OPT_PRESETS[name]["hidden_size"], OPT_PRESETS[name]["num_attention_heads"], False
    shape = LLAMA_PRESETS[name if name in LLAMA_PRESETS else name.removeprefix("llama-")]
    return shape["d_model"], shape["n_heads"], True


@dataclass
class LMTaskConfig(TaskConfig):
    """Language-model pre-training on a text corpus."""

    name: str = "lm"
    model: str = "tiny"  # LLAMA_PRESETS name, or "hf:llama-<preset>" / "hf:opt-125m" etc.
    d_model: int = 0  # 0: the preset's value (likewise n_layers, n_heads, d_ff)
    n_layers: int = 0
    n_heads: int = 0
    d_ff: int = 0
    tie_embeddings: Optional[bool] = None  # None: the architecture's default (LLaMA no, OPT yes)
    data: list[str] = field(default_factory=lambda: ["builtin"])  # "builtin", paths, "hf:c4"
    vocab_size: int = 8192
    seq_len: int = 128
    batch_size: int = 8  # sequences per micro-batch
    val_fraction: float = 0.05  # share of documents held out for validation
    max_train_tokens: int = 0  # 0: every training token (required > 0 for "hf:" sources)
    cache_dir: str = ""  # "": sst.data.cache.default_cache_dir ($SST_CACHE_DIR, ~/.cache/sst, ...)

    def __post_init__(self) -> None:
        # From Python, a datasets.Dataset / IterableDataset (or a list holding some) is data too.
        sources = [self.data] if is_hf_dataset(self.data) or isinstance(self.data, str) else list(self.data)
        self.data = [dataset_source(s) if is_hf_dataset(s) else s for s in sources]
        bad = [type(s).__name__ for s in self.data if not isinstance(s, str)]
        if bad:
            raise ConfigError(f"task.data: entries must be source names or datasets.Dataset objects, got {bad}")
        is_hf = self.model.startswith("hf:") and self.model.removeprefix("hf:") in HF_MODELS
        if self.model not in LLAMA_PRESETS and not is_hf:
            choices = sorted(LLAMA_PRESETS) + [f"hf:{m}" for m in HF_MODELS]
            raise ConfigError(f"task.model: {self.model!r} is not one of {choices}")
        for key in ("d_model", "n_layers", "n_heads", "d_ff"):
            check_range(f"task.{key}", getattr(self, key), low=0, note="0: the preset's value")
        check_range("task.max_train_tokens", self.max_train_tokens, low=0, note="0: every token")
        for key in ("seq_len", "batch_size"):
            check_range(f"task.{key}", getattr(self, key), low=1)
        check_range("task.vocab_size", self.vocab_size, low=257, note="256 bytes + <|endoftext|>")
        check_range(
            "task.val_fraction", self.val_fraction, low=0, high=1, low_inclusive=False, high_inclusive=False
        )
        preset_d_model, preset_n_heads, rotary = _preset_heads(self.model)
        d_model, n_heads = self.d_model or preset_d_model, self.n_heads or preset_n_heads
        if d_model % n_heads or (rotary and (d_model // n_heads) % 2):
            parity = " into heads of even size (rotary embeddings)" if rotary else ""
            raise ConfigError(f"task.n_heads: {n_heads} does not divide task.d_model={d_model}{parity}")
        if not self.data:
            raise ConfigError("task.data: give a source ('builtin', a path or 'hf:<dataset>')")
        streamed = [s for s in self.data if s.startswith("hf:") or is_streamed(s)]
        if streamed and self.max_train_tokens == 0:
            raise ConfigError(
                f"task.max_train_tokens: must be > 0 to bound the streamed source(s) {streamed}"
            )


class LMTask(Task):
    """Next-token prediction; batches are dicts {"input_ids", "labels"} of (B, T) int64."""

    selection_metric = "val_loss"
    report_metric = "val_ppl"
    higher_is_better = False

    def __init__(self, config: LMTaskConfig, seed: int, run_dir: Path):
        super().__init__(config, seed, run_dir)
        self._perm: tuple[int, torch.Tensor] | None = None  # (epoch, permutation) of the last call

    @cached_property
    def data(self) -> LMData:
        """The tokenised corpus (loaded on first use; cached on disk across runs)."""
        c = self.config
        budget = c.max_train_tokens * _CHARS_PER_TOKEN / (1.0 - c.val_fraction)
        data = load_lm_data(c.data, c.vocab_size, c.val_fraction, c.cache_dir, int(budget))
        if c.max_train_tokens:
            data.train = data.train[: c.max_train_tokens + 1]
        check_sequences("train", len(data.train), c.seq_len, c.batch_size)
        check_sequences("val", len(data.val), c.seq_len)
        return data

    @property
    def n_train_sequences(self) -> int:
        c = self.config
        return check_sequences("train", len(self.data.train), c.seq_len, c.batch_size)

    def build_model(self) -> nn.Module:
        c = self.config
        vocab = self.data.vocab_size
        if c.model in LLAMA_PRESETS:
            keys = ("d_model", "n_layers", "n_heads", "d_ff")
            shape: dict[str, Any] = {k: getattr(c, k) for k in keys if getattr(c, k)}
            if c.tie_embeddings is not None:
                shape["tie_embeddings"] = c.tie_embeddings
            return build_llama(c.model, vocab, max_seq_len=c.seq_len, **shape)
        name = c.model.removeprefix("hf:")
        hf_keys = dict(
            d_model="hidden_size", n_layers="num_hidden_layers", n_heads="num_attention_heads",
            d_ff="ffn_dim" if name in OPT_PRESETS else "intermediate_size",
        )
        overrides: dict[str, Any] = {
            hf: getattr(c, ours) for ours, hf in hf_keys.items() if getattr(c, ours)
        }
        if c.tie_embeddings is not None:
            overrides["tie_word_embeddings"] = c.tie_embeddings
        return build_hf_model(name, vocab, max_seq_len=c.seq_len, **overrides)

    def _epoch_permutation(self, epoch: int, n: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            # One generator per (seed, epoch): any batch is computable without the ones before it.
            seeds = np.random.SeedSequence([self.seed & (2**63 - 1), epoch])
            state = seeds.generate_state(2, np.uint32)
            gen = torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
            self._perm = (epoch, torch.randperm(n, generator=gen))
        return self._perm[1]

    def train_batch(self, index: int) -> dict[str, torch.Tensor]:
        """Micro-batch ``index``: B sequences of the epoch ``index // batches_per_epoch`` shuffle.

        Returns {"input_ids": (B, T) int64, "labels": (B, T) int64}, labels = inputs shifted by 1.
        """
        c = self.config
        n = self.n_train_sequences
        epoch, pos = divmod(index, n // c.batch_size)
        rows = self._epoch_permutation(epoch, n)[pos * c.batch_size : (pos + 1) * c.batch_size]
        seqs = torch.from_numpy(pack(self.data.train, c.seq_len, rows.numpy()))
        return {"input_ids": seqs[:, :-1], "labels": seqs[:, 1:]}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        """(mean next-token cross entropy over the batch's tokens, number of tokens)."""
        logits = lm_logits(model, batch["input_ids"])
        labels = batch["labels"]
        # float32 logits: a bf16 softmax over a large vocabulary loses about 2 digits of loss.
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return loss, float(labels.numel())

    def evaluate(
        self, model: nn.Module, split: str = "val", max_batches: int = 0
    ) -> dict[str, float]:
        """{val_loss, val_ppl, val_tokens} over consecutive validation sequences.

        The corpus holds out only a validation split: asking for "test" (or anything else) is a
        ``UsageError`` rather than a validation score labelled as a test score.
        """
        if split != "val":
            raise UsageError(
                f"unknown split {split!r}: the lm task has only a 'val' split (its corpus holds out "
                "no test documents); use --split val"
            )
        c = self.config
        tokens = self.data.val
        n = check_sequences("val", len(tokens), c.seq_len)
        n_batches = math.ceil(n / c.batch_size)
        if max_batches:
            n_batches = min(n_batches, max_batches)
        device = next(model.parameters()).device
        total, count = 0.0, 0.0
        with eval_mode(model), torch.no_grad():
            for b in range(n_batches):
                rows = np.arange(b * c.batch_size, min((b + 1) * c.batch_size, n))
                seqs = torch.from_numpy(pack(tokens, c.seq_len, rows)).to(device)
                batch = {"input_ids": seqs[:, :-1], "labels": seqs[:, 1:]}
                loss, units = self.loss(model, batch)
                total += loss.item() * units
                count += units
        mean = total / count
        ppl = math.exp(min(mean, 700.0))  # exp overflows a float64 past ~709
        return {f"{split}_loss": mean, f"{split}_ppl": ppl, f"{split}_tokens": count}

    def epochs_seen(self, units: float, steps: int) -> float:
        """Sequences seen / training sequences (a unit is one predicted token)."""
        return units / self.config.seq_len / self.n_train_sequences

    def describe(self) -> dict[str, Any]:
        d = self.data
        return {
            "data": list(self.config.data),
            "vocab_size": d.vocab_size,
            "train_tokens": int(len(d.train)),
            "val_tokens": int(len(d.val)),
            "train_documents": d.n_train_documents,
            "val_documents": d.n_val_documents,
            "train_sequences": self.n_train_sequences,
            "seq_len": self.config.seq_len,
            "test_split": "none",
            "tokenizer": d.tokenizer_path.name,  # a content-keyed cache file; the folder is per machine
        }
