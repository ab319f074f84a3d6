"""Byte-level BPE tokenizer trained locally on the task's corpus, cached as JSON.

Text -> UTF-8 bytes -> merges learnt by byte-pair encoding up to ``vocab_size`` tokens (every byte
is in the base alphabet, so any text round-trips). ``<|endoftext|>`` separates documents. The
trained tokenizer is cached under a key hashing (corpus identity, vocab size), so repeated runs
and the runs of a method comparison share it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from sst.atomic import atomic_write_text
from sst.data.cache import cache_key
from sst.errors import ConfigError

EOT = "<|endoftext|>"
_VERSION = "bytelevel-bpe-1"  # bump when training changes, so stale caches are not reused


def train_tokenizer(documents: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE tokenizer with ``vocab_size`` tokens (including ``EOT``)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise ConfigError(
            f"task.vocab_size: vocab_size {vocab_size} is too small: a byte-level tokenizer needs at least "
            f"{len(alphabet) + 1} tokens (256 bytes + {EOT})"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT], initial_alphabet=alphabet, show_progress=False
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    return tokenizer


def load_or_train_tokenizer(
    documents: Callable[[], Iterable[str]], corpus_id: str, vocab_size: int, cache_dir: Path
) -> tuple[Tokenizer, Path]:
    """The cached tokenizer for (``corpus_id``, ``vocab_size``), training it from ``documents()``
    only when no cache file exists. Returns the tokenizer and its JSON path."""
    path = Path(cache_dir) / f"tokenizer-{cache_key(_VERSION, corpus_id, vocab_size)}.json"
    if path.is_file():
        return Tokenizer.from_file(str(path)), path
    tokenizer = train_tokenizer(documents(), vocab_size)
    atomic_write_text(path, tokenizer.to_str())
    return tokenizer, path
