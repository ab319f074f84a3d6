"""Machine translation task: label-smoothed cross entropy for training, loss/perplexity/BLEU to evaluate.

loss = mean over non-pad target tokens of (1 - eps) * -log p(y_t | y_<t, x) + eps * mean_v -log p_v;
BLEU = sacreBLEU corpus score of detokenized greedy (or beam) outputs against the raw references.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from sst.errors import UsageError
from sst.schema import ConfigError, check_range
from sst.data import translation as mt_data
from sst.data.cache import default_cache_dir
from sst.models.hyperbolic_transformer import HyboNetTransformer, HyboNetTransformerConfig
from sst.models.modes import eval_mode
from sst.models.translation import TranslationConfig, TranslationTransformer, label_smoothed_cross_entropy
from sst.tasks.base import Task, TaskConfig, move_to


@dataclass
class TranslationTaskConfig(TaskConfig):
    """Data, model shape and evaluation of a translation run."""

    name: str = "translation"
    data: Literal["multi30k", "synthetic"] = "multi30k"
    data_dir: str = ""  # "" = SST_DATA_DIR, ./shared/data or ../shared/data (synthetic: the cache)
    src_lang: str = "de"
    tgt_lang: str = "en"
    vocab_size: int = 8000  # joint BPE vocabulary
    d_model: int = 128
    n_layers: int = 3  # encoder and decoder each
    n_heads: int = 4
    d_ff: int = 0  # 0 = 4 * d_model
    dropout: float = 0.1
    share_embeddings: bool = True
    label_smoothing: float = 0.1
    max_tokens: int = 4096  # padded tokens per micro-batch
    max_len: int = 128  # longest sentence in subword tokens, bos/eos included
    beam_size: int = 1  # 1 = greedy decoding for BLEU
    length_penalty: float = 1.0
    eval_bleu: bool = True
    bleu_max_sentences: int = 0  # 0 = the whole split
    cache_dir: str = ""  # "": sst.data.cache.default_cache_dir ($SST_CACHE_DIR, ~/.cache/sst, ...)
    geometry: Literal["euclidean", "lorentz"] = "euclidean"
    curvature: float = 1.0  # lorentz: K of the hyperboloid <x, x>_L = -K (curvature -1/K)
    # also scored at the end: Multi30K names (test_2017_flickr, ...), path prefixes or [src, tgt] pairs
    test_sets: list[str | list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_test_sets(self.test_sets)
        check_range("task.curvature", self.curvature, low=0, low_inclusive=False)
        for field in ("d_model", "n_layers", "n_heads", "max_tokens", "beam_size"):
            check_range(f"task.{field}", getattr(self, field), low=1)
        check_range("task.d_ff", self.d_ff, low=0, note="0: 4 * d_model")
        check_range("task.bleu_max_sentences", self.bleu_max_sentences, low=0, note="0: the whole split")
        if self.d_model % self.n_heads:
            raise ConfigError(f"task.n_heads: {self.n_heads} does not divide task.d_model={self.d_model}")
        check_range("task.vocab_size", self.vocab_size, low=len(mt_data.SPECIAL_TOKENS) + 1)
        for field in ("dropout", "label_smoothing"):
            check_range(f"task.{field}", getattr(self, field), low=0, high=1, high_inclusive=False)
        check_range("task.length_penalty", self.length_penalty, low=0)
        check_range("task.max_len", self.max_len, low=2, note="bos and eos")
        if self.max_tokens < self.max_len:
            raise ConfigError(
                f"task.max_tokens: must be >= task.max_len={self.max_len} so every sentence fits, "
                f"got {self.max_tokens}"
            )
        if self.src_lang == self.tgt_lang:
            raise ConfigError(f"task.tgt_lang: equals task.src_lang={self.src_lang!r}")


def check_test_sets(test_sets: list) -> None:
    """ConfigError naming ``task.test_sets[i]`` for an empty entry or a pair that is not two paths."""
    for i, spec in enumerate(test_sets):
        parts = spec.split(",") if isinstance(spec, str) and "," in spec else spec
        if isinstance(parts, str):
            if not parts.strip():
                raise ConfigError(f"task.test_sets[{i}]: empty test set name")
        elif len(parts) != 2 or not all(isinstance(p, str) and p.strip() for p in parts):
            raise ConfigError(f"task.test_sets[{i}]: a pair must be [source file, target file], got {spec!r}")


def build_translation_model(cfg: TranslationTaskConfig, vocab_size: int) -> nn.Module:
    """The encoder-decoder for ``cfg.geometry`` with a ``vocab_size`` vocabulary."""
    model_cfg = TranslationConfig(
        vocab_size=vocab_size,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_ff=cfg.d_ff or 4 * cfg.d_model,
        dropout=cfg.dropout,
        max_len=cfg.max_len,
        share_embeddings=cfg.share_embeddings,
        pad_id=mt_data.PAD_ID,
        bos_id=mt_data.BOS_ID,
        eos_id=mt_data.EOS_ID,
    )
    if cfg.geometry == "euclidean":
        return TranslationTransformer(model_cfg)
    if cfg.geometry == "lorentz":
        return HyboNetTransformer(HyboNetTransformerConfig(**dataclasses.asdict(model_cfg), K=cfg.curvature))
    raise ConfigError(f"task.geometry: unknown geometry {cfg.geometry!r}")


def corpus_bleu(hypotheses: list[str], references: list[str], tokenize: str = "13a") -> float:
    """sacreBLEU corpus score (0-100) of detokenized hypotheses against one reference each."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    return sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize).score


class TranslationTask(Task):
    """Translate ``src_lang`` into ``tgt_lang``; batches are dicts of (B, S)/(B, T) id tensors."""

    selection_metric = "val_bleu"
    report_metric = "test_bleu"
    higher_is_better = True

    def __init__(self, config: TranslationTaskConfig, seed: int, run_dir: Path):
        super().__init__(config, seed, run_dir)
        if not config.eval_bleu:  # select and report on loss when BLEU is switched off
            self.selection_metric, self.report_metric, self.higher_is_better = "val_loss", "test_loss", False
        cache_dir = default_cache_dir(config.cache_dir)
        if config.data == "synthetic":
            corpus_dir = mt_data.write_synthetic_corpus(
                Path(config.data_dir) if config.data_dir else cache_dir / "synthetic",
                config.src_lang,
                config.tgt_lang,
            )
        else:
            corpus_dir = mt_data.resolve_corpus_dir(config.data_dir, config.data)
        self.data = mt_data.load_translation_data(
            corpus_dir, config.src_lang, config.tgt_lang, config.vocab_size, config.max_len, cache_dir
        )
        self.train_split = self.data.splits["train"]
        self.train_batches = self.train_split.batches(config.max_tokens)
        self.tokenizer_key = mt_data.tokenizer_fingerprint(
            corpus_dir, config.src_lang, config.tgt_lang, config.vocab_size)
        self.test_set_files: dict[str, tuple[Path, Path]] = {}
        self.test_set_keys = [self.add_test_set(spec, f"task.test_sets[{i}]")
                              for i, spec in enumerate(config.test_sets)]
        warn_if_data_root_moved(self.run_dir, self.describe())

    # -- training ----------------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        return build_translation_model(self.config, self.data.vocab_size)

    def train_batch(self, index: int) -> dict[str, torch.Tensor]:
        """{"src" (B, S), "tgt_in" (B, T), "tgt_out" (B, T)}: the batches in a per-epoch order."""
        n = len(self.train_batches)
        epoch, position = divmod(index, n)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=generator)
        return self.train_split.collate(self.train_batches[int(order[position])])

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        logits = model(batch["src"], batch["tgt_in"])
        smoothing = self.config.label_smoothing
        loss = label_smoothed_cross_entropy(logits, batch["tgt_out"], mt_data.PAD_ID, smoothing)
        return loss, float((batch["tgt_out"] != mt_data.PAD_ID).sum())

    # -- evaluation --------------------------------------------------------------------------

    def translate(self, model: nn.Module, sentences_ids: list[list[int]]) -> list[list[int]]:
        """Source subword ids (no eos) -> generated target ids, in the input order."""
        device = next(model.parameters()).device
        lengths = [len(s) + 1 for s in sentences_ids]
        outputs: list[list[int]] = [[] for _ in sentences_ids]
        for indices in mt_data.token_batches(lengths, lengths, self.config.max_tokens):
            src = mt_data.pad([sentences_ids[i] + [mt_data.EOS_ID] for i in indices]).to(device)
            max_len = min(self.config.max_len, 2 * src.shape[1] + 10)
            if self.config.beam_size == 1:
                hyps = model.greedy_decode(src, max_len)
            else:
                hyps = model.beam_search(src, self.config.beam_size, max_len, self.config.length_penalty)
            for i, hyp in zip(indices, hyps):
                outputs[i] = hyp
        return outputs

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "val", max_batches: int = 0) -> dict[str, float]:
        """{split_loss (unsmoothed NLL per token), split_ppl, split_bleu}; ``max_batches`` limits
        the loss batches (a fixed random subset); BLEU uses ``bleu_max_sentences``."""
        splits = [name for name in self.data.splits if name != "train"]  # val, test, task.test_sets
        if split not in splits:
            raise UsageError(f"unknown split {split!r}: the translation task has {splits}")
        data = self.data.splits[split]
        device = next(model.parameters()).device
        with eval_mode(model):
            batches = data.batches(self.config.max_tokens)
            order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(0)).tolist()
            if max_batches > 0:
                order = order[:max_batches]
            total, count = 0.0, 0.0
            for b in order:
                batch = move_to(data.collate(batches[b]), device)
                logits = model(batch["src"], batch["tgt_in"])
                tokens = float((batch["tgt_out"] != mt_data.PAD_ID).sum())
                nll = label_smoothed_cross_entropy(logits, batch["tgt_out"], mt_data.PAD_ID)
                total += float(nll) * tokens
                count += tokens
            loss = total / max(count, 1.0)
            metrics = {f"{split}_loss": loss, f"{split}_ppl": math.exp(min(loss, 100.0))}
            if self.config.eval_bleu:
                n = self.config.bleu_max_sentences or len(data)
                hyps = mt_data.decode(self.data.tokenizer, self.translate(model, data.src_ids[:n]))
                metrics[f"{split}_bleu"] = corpus_bleu(hyps, data.tgt_text[:n])
        return metrics

    def final_metrics(self, model: nn.Module) -> dict[str, float]:
        """The test split, then every ``task.test_sets`` entry as test_<name>_{loss,ppl,bleu}."""
        metrics = self.evaluate(model, "test")
        for key in self.test_set_keys:
            metrics.update(self.evaluate(model, key))
        return metrics

    # -- extra test sets ---------------------------------------------------------------------

    def add_test_set(self, spec: str | list[str], option: str = "task.test_sets") -> str:
        """Read and tokenize a test set (see ``mt_data.resolve_test_set``); returns its split key.
        ``option`` names where ``spec`` came from in errors (a ``task.`` key: ConfigError, else
        UsageError for a name clash)."""
        cfg = self.config
        key, src_path, tgt_path = mt_data.resolve_test_set(spec, self.data.corpus_dir, cfg.src_lang, cfg.tgt_lang,
                                                           option)
        files = (src_path.resolve(), tgt_path.resolve())
        if key in self.test_set_files:
            if self.test_set_files[key] != files:
                error = ConfigError if option.startswith("task.") else UsageError
                raise error(f"{option}: test set {spec!r}: its name {key!r} is taken by {self.test_set_files[key][0]}")
            return key
        src, tgt = mt_data.read_parallel_files(src_path, tgt_path, f"{option}: test set {spec!r} is misaligned")
        self.data.splits[key] = mt_data.ParallelSplit(
            src, tgt, mt_data.encode(self.data.tokenizer, src, cfg.max_len),
            mt_data.encode(self.data.tokenizer, tgt, cfg.max_len))
        self.test_set_files[key] = files
        return key

    def evaluate_test_set(self, model: nn.Module, spec: str | list[str], max_batches: int = 0,
                          option: str = "--test-set") -> dict[str, float]:
        """{test_<name>_loss, test_<name>_ppl, test_<name>_bleu} of one test set (name, prefix or pair);
        ``option`` names where ``spec`` came from in errors."""
        return self.evaluate(model, self.add_test_set(spec, option), max_batches)

    def epochs_seen(self, units: float, steps: int) -> float:
        """Target tokens seen / target tokens in the training split."""
        return units / sum(len(t) + 1 for t in self.train_split.tgt_ids)

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "corpus_dir": str(self.data.corpus_dir),
            "data_root": str(self.data.corpus_dir.resolve()),
            "tokenizer": self.tokenizer_key,
            "test_sets": {key: [str(p) for p in files] for key, files in self.test_set_files.items()},
            "pair": f"{cfg.src_lang}-{cfg.tgt_lang}",
            "vocab_size": self.data.vocab_size,
            "sentences": {split: len(s) for split, s in self.data.splits.items()},
            "train_batches_per_epoch": len(self.train_batches),
            "train_tokens": sum(len(t) + 1 for t in self.train_split.tgt_ids),
        }


def warn_if_data_root_moved(run_dir: Path, now: dict[str, Any]) -> None:
    """Warn when a finished run in ``run_dir`` (its results.json) was trained on another data root
    than ``now`` (this task's ``describe()``), and say whether the tokenizer changed with it."""
    try:
        recorded = json.loads((Path(run_dir) / "results.json").read_text()).get("task", {})
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(recorded, dict) or recorded.get("data_root") in (None, now["data_root"]):
        return
    same = recorded.get("tokenizer") == now["tokenizer"]
    warnings.warn(
        f"{run_dir} was trained on data in {recorded['data_root']}, but this task reads {now['data_root']} "
        f"(task.data_dir / $SST_DATA_DIR): "
        + ("its training files are identical, so the vocabulary is the same" if same else
           "its training files differ, so the BPE vocabulary differs and the scores are not comparable"),
        stacklevel=2,
    )
