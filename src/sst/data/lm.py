"""Language-model data: documents -> BPE tokens -> packed (seq_len + 1)-token sequences.

Documents come from the shipped corpus ("builtin"), local text files and folders, a Hugging
Face dataset streamed by name ("hf:c4"), or a ``datasets.Dataset`` object given from Python. A deterministic, evenly spaced ``val_fraction`` of the
documents is held out for validation. Each split is one token stream (every document followed by
``<|endoftext|>``); sequence i is tokens[i*T : i*T + T + 1], inputs = [:-1], targets = [1:].
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from sst.atomic import atomic_write_bytes
from sst.data import hf_dataset
from sst.data.cache import cache_key, default_cache_dir
from sst.data.tokenizer import EOT, load_or_train_tokenizer
from sst.errors import DataError, DependencyError, MissingDataError

_CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
BUILTIN_CORPUS = _CORPUS_DIR / "kjv.txt.xz"
# Corpora shipped in the package (provenance and licences in corpus/README.md): "builtin" is the
# small default; "builtin:techdocs" (~5.5M tokens) is large enough to compare methods in one epoch.
BUILTIN_CORPORA = {
    "builtin": BUILTIN_CORPUS,
    "builtin:kjv": BUILTIN_CORPUS,
    "builtin:techdocs": _CORPUS_DIR / "techdocs.txt.xz",
}
TEXT_SUFFIXES = (".txt", ".txt.gz", ".txt.xz")
# Short names for common pre-training corpora: name -> (dataset path, config name).
HF_ALIASES = {"c4": ("allenai/c4", "en"), "openwebtext": ("Skylion007/openwebtext", None)}
HF_INSTALL = "pip install 'sparse-spectral-training[hf]'"
# A text file decodes to at most this share of U+FFFD replacement characters (else: binary).
_MAX_UNDECODABLE = 0.01


# ---------------------------------------------------------------------------------------------
# Reading documents


def read_text(path: Path) -> str:
    """The text of a ``.txt``, ``.gz`` or ``.xz`` file (UTF-8, undecodable bytes replaced)."""
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def read_text_file(path: Path) -> str:
    """``read_text`` for a user's file, refusing binary content (NUL bytes or many bytes that are
    not UTF-8) with a ``DataError`` naming the file."""
    try:
        text = read_text(path)
    except (OSError, EOFError, lzma.LZMAError) as err:
        raise DataError(f"task.data: cannot read {path}: {err}") from err
    undecodable = text.count("\ufffd")
    if "\x00" in text or undecodable > _MAX_UNDECODABLE * len(text):
        raise DataError(
            f"task.data: {path} is not a UTF-8 text file ({undecodable} of {len(text)} characters "
            f"undecodable{', NUL bytes' if chr(0) in text else ''})"
        )
    return text


def split_documents(text: str) -> list[str]:
    """Documents are separated by one or more blank lines; surrounding whitespace is dropped."""
    return [doc.strip() for doc in re.split(r"\n[ \t\r]*\n", text) if doc.strip()]


def text_files(source: str) -> list[Path]:
    """The files a local source names: itself, or the ``*.txt[.gz|.xz]`` files under a folder."""
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES))
        if not files:
            kinds = "/".join(TEXT_SUFFIXES)
            raise DataError(f"task.data: data source {source!r}: folder has no {kinds} files")
        return files
    raise MissingDataError(f"task.data: data source {source!r}: no such file or folder")


def stream_hf_documents(name: str, max_chars: int) -> list[str]:
    """Documents of Hugging Face dataset ``name`` (``c4``, ``openwebtext`` or ``path[:config]``),
    streamed from its train split until ``max_chars`` characters have been read."""
    if any(os.environ.get(v, "0") not in ("0", "") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")):
        raise DataError(
            f"task.data: data source 'hf:{name}' needs internet, but HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set"
        )
    try:
        import datasets
    except ImportError as err:
        raise DependencyError(
            f"task.data: data source 'hf:{name}' needs the `datasets` package: {HF_INSTALL}"
        ) from err
    path, _, config = name.partition(":")
    path, config = HF_ALIASES.get(name, (path, config or None))
    docs, total = [], 0
    try:
        for row in datasets.load_dataset(path, config, split="train", streaming=True):
            text = row.get("text", "").strip()
            if text:
                docs.append(text)
                total += len(text)
            if total >= max_chars:
                break
    except Exception as err:  # network, authentication, unknown dataset: one clear message
        raise DataError(
            f"task.data: could not stream Hugging Face dataset {path!r} (data source 'hf:{name}'): {err}"
        ) from err
    return docs


@dataclass
class Source:
    """A resolved corpus: a stable identity for caching and a way to read its documents."""

    identity: str
    documents: Callable[[], list[str]]


def resolve_sources(sources: list[str] | tuple[str, ...], max_chars: int = 0) -> Source:
    """Turn data source names into one ``Source``.

    Each name is a shipped corpus (``BUILTIN_CORPORA``), ``"hf:<dataset>"`` (needs ``max_chars`` > 0) or a local file or
    folder. File identity is (resolved path, size, mtime), so an edited file gets a new cache.
    """
    if not sources:
        raise DataError("task.data: no data sources given")
    ids: list[str] = []
    readers: list[Callable[[], list[str]]] = []
    for source in sources:
        if source in BUILTIN_CORPORA:  # identified by content: the same cache wherever installed
            corpus = BUILTIN_CORPORA[source]
            ids.append("builtin|" + hashlib.sha256(corpus.read_bytes()).hexdigest())
            readers.append(lambda corpus=corpus: split_documents(read_text(corpus)))
            continue
        elif source.startswith(hf_dataset.PREFIX):
            if hf_dataset.is_streamed(source) and max_chars <= 0:
                raise DataError(f"task.data: data source {source!r} is streamed: give a positive character budget")
            ids.append(f"{source}|{max_chars if hf_dataset.is_streamed(source) else ''}")
            readers.append(lambda source=source: hf_dataset.dataset_documents(source, max_chars))
            continue
        elif source.startswith("hf:"):
            name = source[3:]
            if not name:
                raise DataError("task.data: data source 'hf:' needs a dataset name, e.g. 'hf:c4'")
            if max_chars <= 0:
                raise DataError(
                    f"task.data: data source {source!r} is streamed: give a positive character budget"
                )
            ids.append(f"{source}|{max_chars}")
            readers.append(lambda name=name: stream_hf_documents(name, max_chars))
            continue
        elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", source) and not Path(source).exists():
            raise DataError(
                f"task.data: unknown data source {source!r}: use 'builtin', 'hf:<dataset>' or a local path"
            )
        else:
            files = text_files(source)
        for f in files:
            st = f.stat()
            ids.append(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}")
        readers.append(lambda files=files: [d for f in files for d in split_documents(read_text_file(f))])
    return Source("\n".join(ids), lambda: [d for read in readers for d in read()])


# ---------------------------------------------------------------------------------------------
# Tokens


def validation_mask(n_documents: int, val_fraction: float) -> np.ndarray:
    """Boolean (n_documents,): True for the evenly spaced ``val_fraction`` of documents held out.

    Document i is held out when floor((i+1) f) > floor(i f): deterministic, spread over the corpus.
    """
    i = np.arange(n_documents)
    return np.floor((i + 1) * val_fraction) > np.floor(i * val_fraction)


def encode_stream(
    tokenizer: Tokenizer, documents: list[str], dtype: np.dtype, chunk: int = 512
) -> np.ndarray:
    """One token stream (N,) of ``dtype``: each document's ids, then the ``<|endoftext|>`` id."""
    eot = tokenizer.token_to_id(EOT)
    parts = []
    for start in range(0, len(documents), chunk):
        batch = tokenizer.encode_batch(documents[start : start + chunk], add_special_tokens=False)
        parts.extend(np.asarray(enc.ids + [eot], dtype=dtype) for enc in batch)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


@dataclass
class LMData:
    """Tokenised corpus: train and validation token streams (1-D integer arrays), tokenizer."""

    tokenizer: Tokenizer
    train: np.ndarray
    val: np.ndarray
    n_train_documents: int
    n_val_documents: int
    tokenizer_path: Path

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def load_lm_data(
    sources: list[str] | tuple[str, ...],
    vocab_size: int = 8192,
    val_fraction: float = 0.05,
    cache_dir: str | Path = "",
    max_chars: int = 0,
) -> LMData:
    """Read, tokenise and split a corpus, reusing the cached tokenizer and token arrays.

    The tokenizer is trained on all documents (train and validation) of the corpus; the arrays
    are cached as ``.npy`` (uint16 when the vocabulary fits, else int32) beside it.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"task.val_fraction: must be in (0, 1), got {val_fraction}")
    cache = default_cache_dir(cache_dir)
    source = resolve_sources(sources, max_chars)
    documents: list[str] | None = None

    def docs() -> list[str]:
        nonlocal documents
        if documents is None:
            documents = source.documents()
            if not documents:
                raise DataError(f"task.data: data sources {list(sources)} contain no text (empty corpus)")
        return documents

    tokenizer, tok_path = load_or_train_tokenizer(docs, source.identity, vocab_size, cache)
    folder = cache / f"lm-{cache_key(tok_path.name, source.identity, val_fraction)}"
    paths = {split: folder / f"{split}.npy" for split in ("train", "val", "counts")}
    if all(p.is_file() for p in paths.values()):
        train, val, counts = (np.load(paths[s]) for s in ("train", "val", "counts"))
    else:
        all_docs = docs()
        held_out = validation_mask(len(all_docs), val_fraction)
        n_val = int(held_out.sum())
        if n_val == 0 or n_val == len(all_docs):
            raise DataError(
                f"task.data: the corpus {list(sources)} has {len(all_docs)} document(s): too few to hold out val_fraction "
                f"{val_fraction} and still train (documents are separated by blank lines)"
            )
        dtype = np.uint16 if tokenizer.get_vocab_size() <= 1 << 16 else np.int32
        train = encode_stream(tokenizer, [d for d, v in zip(all_docs, held_out) if not v], dtype)
        val = encode_stream(tokenizer, [d for d, v in zip(all_docs, held_out) if v], dtype)
        counts = np.array([len(all_docs) - n_val, n_val], dtype=np.int64)
        for split, array in (("train", train), ("val", val), ("counts", counts)):
            _save_npy(paths[split], array)
    return LMData(tokenizer, train, val, int(counts[0]), int(counts[1]), tok_path)


def num_sequences(n_tokens: int, seq_len: int) -> int:
    """How many (seq_len + 1)-token windows with stride seq_len fit in ``n_tokens`` tokens."""
    return max(0, (n_tokens - 1) // seq_len)


def pack(tokens: np.ndarray, seq_len: int, indices: np.ndarray) -> np.ndarray:
    """Sequences ``indices`` (n,) of the stream as (n, seq_len + 1) int64.

    Row j is tokens[i*T : i*T + T + 1] for i = indices[j]: consecutive windows share one token.
    """
    rows = np.asarray(indices, dtype=np.int64)[:, None] * seq_len + np.arange(seq_len + 1)
    return tokens[rows].astype(np.int64)


def check_sequences(split: str, n_tokens: int, seq_len: int, needed: int = 1) -> int:
    """Number of sequences in a split, raising a DataError naming the sizes when < ``needed``."""
    n = num_sequences(n_tokens, seq_len)
    if n < needed:
        key = "task.seq_len" if n == 0 else "task.batch_size"
        raise DataError(
            f"{key}: the {split} split has {n_tokens} tokens: {n} sequence(s) of seq_len {seq_len} "
            f"(+1 target token), fewer than the {needed} needed; use a shorter seq_len, a smaller "
            f"batch or a larger corpus"
        )
    return n


__all__ = [
    "BUILTIN_CORPORA", "BUILTIN_CORPUS", "LMData", "Source", "check_sequences", "load_lm_data",
    "num_sequences", "pack", "read_text", "read_text_file", "resolve_sources", "split_documents",
    "stream_hf_documents", "text_files", "validation_mask",
]
