"""Parallel corpora for translation: Multi30K files, a joint BPE vocabulary, token-count batches.

A corpus is one gzip (or plain) text file per split and language, line i of ``{split}.{src}``
aligned with line i of ``{split}.{tgt}``. Sentences become ids ``tokens + [eos]`` (source) and
``[bos] + tokens + [eos]`` (target); batches hold at most ``max_tokens`` padded tokens,
batch_size * max_length <= max_tokens, formed once from length-sorted sentences.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from sst.atomic import atomic_write_bytes, atomic_write_text
from sst.data.cache import default_cache_dir
from sst.errors import DataError, MissingDataError, UsageError

SPLIT_FILES = {"train": "train", "val": "val", "test": "test_2016_flickr"}
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)


# --------------------------------------------------------------------------------------------
# Locating and reading files


def data_dir_candidates() -> list[Path]:
    """Where the shared datasets are looked for, in order, when no directory is configured."""
    places = []
    if os.environ.get("SST_DATA_DIR"):
        places.append(Path(os.environ["SST_DATA_DIR"]))
    places += [Path.cwd() / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    repo_root = Path(__file__).resolve().parents[3]  # src/sst/data/translation.py -> repo root
    places.append(repo_root.parent / "shared" / "data")
    return places


def resolve_corpus_dir(data_dir: str | Path = "", corpus: str = "multi30k") -> Path:
    """The folder holding ``corpus``: ``data_dir`` itself or its ``corpus`` subfolder if given,
    else ``<first existing data dir>/<corpus>``; raises MissingDataError listing the places tried."""
    if data_dir:
        base = Path(data_dir)
        tried = [base / corpus, base]
    else:
        tried = [place / corpus for place in data_dir_candidates()]
    for place in tried:
        if place.is_dir():
            return place
    raise MissingDataError(
        f"task.data_dir: {corpus} data not found; tried {[str(p) for p in tried]} "
        "(set task.data_dir or the SST_DATA_DIR environment variable)"
    )


def _split_path(corpus_dir: Path, split: str, lang: str) -> Path:
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(SPLIT_FILES)}")
    stem = corpus_dir / f"{SPLIT_FILES[split]}.{lang}"
    for path in (stem.with_name(stem.name + ".gz"), stem):
        if path.is_file():
            return path
    raise MissingDataError(f"task.data_dir: missing {stem}.gz (or {stem}) for split {split!r}")


def available_languages(corpus_dir: Path) -> list[str]:
    """Languages that have a training file in ``corpus_dir``."""
    prefix = SPLIT_FILES["train"] + "."
    names = [p.name.removesuffix(".gz") for p in corpus_dir.iterdir() if p.name.startswith(prefix)]
    return sorted(name[len(prefix) :] for name in names)


def read_lines(path: Path) -> list[str]:
    """Stripped lines of a UTF-8 text file (gzip if it ends in .gz); an empty line, an empty file
    or bytes that are not UTF-8 are a ``DataError`` naming the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            lines = [line.strip() for line in handle.read().split("\n")]
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a UTF-8 text file (byte {err.start}: {err.reason})") from err
    except (OSError, EOFError) as err:  # a truncated or non-gzip .gz file
        raise DataError(f"{path}: cannot read: {err}") from err
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    if not lines:
        raise DataError(f"{path}: the file holds no sentences")
    for number, line in enumerate(lines, start=1):
        if not line:
            raise DataError(f"{path}: line {number} is empty")
    return lines


def read_parallel(corpus_dir: Path, split: str, src_lang: str, tgt_lang: str) -> tuple[list[str], list[str]]:
    """Aligned (source sentences, target sentences) of one split."""
    langs = available_languages(corpus_dir)
    for lang in (src_lang, tgt_lang):
        if lang not in langs:
            raise DataError(
                f"task.src_lang/tgt_lang: language {lang!r} not found in {corpus_dir} (pair {src_lang}->{tgt_lang}); "
                f"available: {langs}"
            )
    if src_lang == tgt_lang:
        raise DataError(f"task.tgt_lang: source and target language are both {src_lang!r}")
    return read_parallel_files(_split_path(corpus_dir, split, src_lang), _split_path(corpus_dir, split, tgt_lang),
                               f"misaligned {split} split")


# --------------------------------------------------------------------------------------------
# Extra test sets: Multi30K test files by name, or parallel files anywhere

MULTI30K_TEST_SETS = ("test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")


def _existing(stem: Path) -> Path | None:
    # ``stem``.gz or ``stem`` itself, whichever exists (gzip first, as Multi30K ships).
    for path in (stem.with_name(stem.name + ".gz"), stem):
        if path.is_file():
            return path
    return None


def test_set_key(name: str) -> str:
    """The split name (and metric prefix) of a test set: ``test_<name>``, not doubling a "test_"."""
    name = re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_") or "set"
    return name if name.startswith("test_") else f"test_{name}"


def resolve_test_set(spec: str | list[str], corpus_dir: Path, src_lang: str, tgt_lang: str,
                     option: str = "task.test_sets") -> tuple[str, Path, Path]:
    """(split key, source file, target file) of one test set.

    ``spec``: a file-name stem in ``corpus_dir`` (a Multi30K test set such as test_2017_flickr);
    or a path prefix with files ``<prefix>.<src_lang>`` and ``<prefix>.<tgt_lang>`` (each may end
    in .gz); or a pair [source file, target file] (on the command line "source,target"). Errors
    start with ``option`` (where the spec came from): UsageError for a pair that is not two paths,
    MissingDataError listing the places tried.
    """
    if isinstance(spec, str) and "," in spec:
        spec = spec.split(",")
    if not isinstance(spec, str):
        if len(spec) != 2 or not all(isinstance(p, str) and p for p in spec):
            raise UsageError(f"{option}: test set {spec!r}: a pair must be [source file, target file]")
        src, tgt = (Path(p).expanduser() for p in spec)
        for path in (src, tgt):
            if not path.is_file():
                raise MissingDataError(f"{option}: test set {spec!r}: {path} does not exist")
        name = src.name.removesuffix(".gz")
        stem = name.removesuffix(f".{src_lang}") if name.endswith(f".{src_lang}") else Path(name).stem
        return test_set_key(stem), src, tgt
    places = [] if "/" in spec or os.sep in spec else [corpus_dir / spec]
    places.append(Path(spec).expanduser())
    for prefix in places:
        src, tgt = _existing(prefix.with_name(f"{prefix.name}.{src_lang}")), _existing(
            prefix.with_name(f"{prefix.name}.{tgt_lang}"))
        if src and tgt:
            return test_set_key(prefix.name), src, tgt
    tried = [f"{p}.{lang}[.gz]" for p in places for lang in (src_lang, tgt_lang)]
    raise MissingDataError(f"{option}: test set {spec!r} not found; tried {tried} "
                           f"(Multi30K names: {list(MULTI30K_TEST_SETS)})")


def read_parallel_files(src_path: Path, tgt_path: Path,
                        what: str = "misaligned test set") -> tuple[list[str], list[str]]:
    """Aligned (source, target) sentences of two files; unequal line counts are a DataError that
    starts with ``what`` and names both files and the first line without a partner."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        longer = src_path if len(src) > len(tgt) else tgt_path
        raise DataError(f"{what}: {src_path} has {len(src)} lines but {tgt_path} has {len(tgt)} "
                        f"(line {min(len(src), len(tgt)) + 1} of {longer} has no translation)")
    return src, tgt


def tokenizer_fingerprint(corpus_dir: Path, src_lang: str, tgt_lang: str, vocab_size: int) -> str:
    """The cache key of the BPE vocabulary trained on ``corpus_dir``'s training files: equal keys,
    equal tokenizers (so a run evaluated on another data root can tell whether its ids still mean
    the same subwords)."""
    files = [_split_path(corpus_dir, "train", src_lang), _split_path(corpus_dir, "train", tgt_lang)]
    return _fingerprint(files, vocab_size)


# --------------------------------------------------------------------------------------------
# Joint BPE vocabulary, trained locally and cached


def _fingerprint(files: list[Path], vocab_size: int) -> str:
    digest = hashlib.sha256(f"bpe-v1 vocab={vocab_size}".encode())
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def train_bpe_tokenizer(files: list[Path], vocab_size: int = 8000, cache_dir: str | Path = ""):
    """A joint BPE ``tokenizers.Tokenizer`` over ``files``, loaded from the cache when present.

    Whitespace becomes a word-start marker (Metaspace), so decoding restores single-spaced text.
    The cache key hashes the files' names and bytes with the vocabulary size.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    cache = default_cache_dir(cache_dir)
    path = cache / "tokenizers" / f"bpe-{_fingerprint(files, vocab_size)}.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tokenizer.train_from_iterator((line for f in files for line in read_lines(f)), trainer=trainer)
    for token_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == token_id
    # Atomic, so concurrent runs never read a half-written file; the bytes of ``tokenizer.save``.
    atomic_write_text(path, tokenizer.to_str(pretty=True))
    return tokenizer


def encode(tokenizer, sentences: list[str], max_len: int) -> list[list[int]]:
    """Sentences -> subword ids, each cut to ``max_len - 1`` so that bos/eos fit in ``max_len``."""
    return [e.ids[: max_len - 1] for e in tokenizer.encode_batch(sentences)]


def decode(tokenizer, ids: list[list[int]]) -> list[str]:
    """Subword ids (without bos/eos) -> detokenized sentences."""
    return tokenizer.decode_batch(ids, skip_special_tokens=True)


# --------------------------------------------------------------------------------------------
# Token-count batching


def token_batches(src_lengths: list[int], tgt_lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Sentence indices grouped so that len(batch) * longest side <= max_tokens.

    Sentences are sorted by (source, target) length (ties by index), so the batches are
    deterministic and nearly free of padding. Each index appears in exactly one batch.
    """
    order = sorted(range(len(src_lengths)), key=lambda i: (src_lengths[i], tgt_lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        size = max(src_lengths[i], tgt_lengths[i])
        if size > max_tokens:
            raise DataError(f"task.max_tokens: sentence {i} has {size} tokens, more than max_tokens={max_tokens}")
        if current and (len(current) + 1) * max(longest, size) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, size)
    if current:
        batches.append(current)
    return batches


def pad(rows: list[list[int]], pad_id: int = PAD_ID) -> torch.Tensor:
    """Ragged id lists -> (B, L) long tensor right-padded with ``pad_id``."""
    out = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


@dataclass
class ParallelSplit:
    """One split: raw sentences and their subword ids (without bos/eos)."""

    src_text: list[str]
    tgt_text: list[str]
    src_ids: list[list[int]]
    tgt_ids: list[list[int]]

    def __len__(self) -> int:
        return len(self.src_text)

    def batches(self, max_tokens: int) -> list[list[int]]:
        """Token-count batches; lengths count eos on the source and bos (or eos) on the target."""
        src_lengths = [len(s) + 1 for s in self.src_ids]
        return token_batches(src_lengths, [len(t) + 1 for t in self.tgt_ids], max_tokens)

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """{"src": (B, S) ids + eos, "tgt_in": (B, T) bos + ids, "tgt_out": (B, T) ids + eos}."""
        return {
            "src": pad([self.src_ids[i] + [EOS_ID] for i in indices]),
            "tgt_in": pad([[BOS_ID] + self.tgt_ids[i] for i in indices]),
            "tgt_out": pad([self.tgt_ids[i] + [EOS_ID] for i in indices]),
        }


@dataclass
class TranslationData:
    """Tokenizer plus the train/val/test splits of a language pair."""

    tokenizer: object
    splits: dict[str, ParallelSplit]
    corpus_dir: Path

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()


def load_translation_data(
    corpus_dir: Path,
    src_lang: str = "de",
    tgt_lang: str = "en",
    vocab_size: int = 8000,
    max_len: int = 128,
    cache_dir: str | Path = "",
) -> TranslationData:
    """Read, check and tokenize every split; BPE is trained on the training source + target."""
    texts = {split: read_parallel(corpus_dir, split, src_lang, tgt_lang) for split in SPLIT_FILES}
    train_files = [_split_path(corpus_dir, "train", src_lang), _split_path(corpus_dir, "train", tgt_lang)]
    tokenizer = train_bpe_tokenizer(train_files, vocab_size, cache_dir)
    splits = {
        split: ParallelSplit(src, tgt, encode(tokenizer, src, max_len), encode(tokenizer, tgt, max_len))
        for split, (src, tgt) in texts.items()
    }
    return TranslationData(tokenizer, splits, corpus_dir)


# --------------------------------------------------------------------------------------------
# A synthetic language pair for tests and smoke runs

_SYNTHETIC_LEXICON = {
    "ka": "cat", "lo": "dog", "mi": "sees", "nu": "the", "pe": "big", "ri": "small", "so": "red",
    "tu": "house", "va": "runs", "xe": "near", "zo": "tree", "bi": "a", "du": "blue", "fa": "eats",
}  # fmt: skip


def write_synthetic_corpus(
    directory: str | Path,
    src_lang: str = "de",
    tgt_lang: str = "en",
    sizes: tuple[int, int, int] = (2000, 100, 100),
    seed: int = 0,
) -> Path:
    """Write a word-for-word translated pair in the Multi30K layout; returns ``directory``.

    Source sentences are 2-8 pseudo-words; the target maps each through a fixed lexicon and
    reverses the last two words, so a model must learn both lexicon and a little reordering.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    words = sorted(_SYNTHETIC_LEXICON)
    for split, size in zip(SPLIT_FILES.values(), sizes):
        src_lines, tgt_lines = [], []
        for _ in range(size):
            src = [rng.choice(words) for _ in range(rng.randint(2, 8))]
            tgt = [_SYNTHETIC_LEXICON[w] for w in src]
            tgt[-2:] = tgt[-2:][::-1]
            src_lines.append(" ".join(src))
            tgt_lines.append(" ".join(tgt))
        for lang, lines in ((src_lang, src_lines), (tgt_lang, tgt_lines)):
            raw = io.BytesIO()
            # mtime=0 keeps the bytes, hence the tokenizer cache key, identical across writes.
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as handle:
                handle.write(("\n".join(lines) + "\n").encode("utf-8"))
            atomic_write_bytes(directory / f"{split}.{lang}.gz", raw.getvalue())
    return directory
