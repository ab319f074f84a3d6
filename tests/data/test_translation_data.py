"""Parallel-corpus loading: file checks, the cached BPE vocabulary and token-count batching."""

import gzip
from pathlib import Path

import pytest

from sst.data import translation as mt
from sst.errors import DataError, MissingDataError, UsageError

MULTI30K = Path(__file__).resolve().parents[3] / "shared" / "data" / "multi30k"  # ../shared beside the repo


def write(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


@pytest.fixture
def corpus(tmp_path) -> Path:
    return mt.write_synthetic_corpus(tmp_path / "synth", sizes=(300, 20, 20))


def test_synthetic_corpus_is_aligned_and_deterministic(corpus, tmp_path):
    src, tgt = mt.read_parallel(corpus, "train", "de", "en")
    assert len(src) == len(tgt) == 300
    assert all(len(s.split()) == len(t.split()) for s, t in zip(src, tgt))
    again = mt.write_synthetic_corpus(tmp_path / "again", sizes=(300, 20, 20))
    assert (again / "train.de.gz").read_bytes() == (corpus / "train.de.gz").read_bytes()


def test_misaligned_files_name_both_files_and_counts(corpus):
    write(corpus / "val.en.gz", ["one", "two"])
    with pytest.raises(DataError, match=r"misaligned val split: .*val\.de\.gz has 20 lines but .*val\.en\.gz has 2 "
                                       r"\(line 3 of .*val\.de\.gz has no translation\)"):
        mt.read_parallel(corpus, "val", "de", "en")


def test_test_set_errors_name_the_option_and_file(corpus):
    with pytest.raises(UsageError, match=r"^--test-set: test set \['a', 'b', 'c'\]: a pair must be"):
        mt.resolve_test_set("a,b,c", corpus, "de", "en", "--test-set")
    with pytest.raises(MissingDataError, match=r"^--test-set: test set .*: .*nope\.en does not exist"):
        mt.resolve_test_set(f"{corpus / 'val.de.gz'},{corpus / 'nope.en'}", corpus, "de", "en", "--test-set")
    with pytest.raises(MissingDataError, match=r"^task.test_sets: test set 'test_2030' not found; tried .*test_2030"):
        mt.resolve_test_set("test_2030", corpus, "de", "en")
    write(corpus / "mine.en.gz", ["one"])
    with pytest.raises(DataError, match=r"^misaligned test set: .*val\.de\.gz has 20 lines but .*mine\.en\.gz has 1"):
        mt.read_parallel_files(corpus / "val.de.gz", corpus / "mine.en.gz")


def test_empty_line_names_file_and_line(corpus):
    write(corpus / "test_2016_flickr.de.gz", ["ka lo"] * 5 + [""] + ["mi nu"] * 14)
    with pytest.raises(ValueError, match=r"test_2016_flickr\.de\.gz: line 6 is empty"):
        mt.read_parallel(corpus, "test", "de", "en")


def test_unknown_language_pair_lists_available(corpus):
    with pytest.raises(ValueError, match=r"'fr' not found .*available: \['de', 'en'\]"):
        mt.read_parallel(corpus, "train", "fr", "en")


def test_missing_split_file_is_named(corpus):
    (corpus / "val.en.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"val\.en"):
        mt.read_parallel(corpus, "val", "de", "en")


def test_missing_data_dir_lists_places_tried(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        mt.resolve_corpus_dir(tmp_path / "nowhere")
    monkeypatch.setenv("SST_DATA_DIR", str(tmp_path / "env_dir"))
    with pytest.raises(FileNotFoundError, match=r"env_dir.*SST_DATA_DIR"):
        mt.resolve_corpus_dir("", "no_such_corpus")
    assert mt.resolve_corpus_dir(tmp_path.parent, tmp_path.name) == tmp_path
    (tmp_path / "env_dir" / "mini").mkdir(parents=True)
    assert mt.resolve_corpus_dir("", "mini") == tmp_path / "env_dir" / "mini"


def test_tokenizer_round_trips_and_is_cached(corpus, tmp_path, monkeypatch):
    files = [corpus / "train.de.gz", corpus / "train.en.gz"]
    tokenizer = mt.train_bpe_tokenizer(files, vocab_size=60, cache_dir=tmp_path / "cache")
    cached = list((tmp_path / "cache" / "tokenizers").glob("*.json"))
    assert len(cached) == 1
    assert [tokenizer.id_to_token(i) for i in range(4)] == list(mt.SPECIAL_TOKENS)
    src, tgt = mt.read_parallel(corpus, "val", "de", "en")
    assert mt.decode(tokenizer, mt.encode(tokenizer, tgt, max_len=64)) == tgt

    # A second call must load the file, not train: training is made impossible here.
    import tokenizers.trainers

    monkeypatch.setattr(tokenizers.trainers, "BpeTrainer", None)
    again = mt.train_bpe_tokenizer(files, vocab_size=60, cache_dir=tmp_path / "cache")
    assert again.encode(src[0]).ids == tokenizer.encode(src[0]).ids
    with pytest.raises(TypeError):  # another vocabulary size is another cache entry
        mt.train_bpe_tokenizer(files, vocab_size=61, cache_dir=tmp_path / "cache")


def test_encode_truncates_to_fit_bos_and_eos(corpus, tmp_path):
    data = mt.load_translation_data(corpus, vocab_size=60, max_len=5, cache_dir=tmp_path / "cache")
    split = data.splits["train"]
    assert max(len(ids) for ids in split.src_ids + split.tgt_ids) == 4
    batch = split.collate([0, 1, 2])
    assert batch["src"].shape[1] <= 5 and batch["tgt_in"].shape[1] <= 5


@pytest.mark.parametrize("max_tokens", [12, 40, 200])
def test_token_batches_cover_once_within_budget(max_tokens):
    import random

    rng = random.Random(max_tokens)
    src = [rng.randint(1, 12) for _ in range(257)]
    tgt = [rng.randint(1, 12) for _ in range(257)]
    batches = mt.token_batches(src, tgt, max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(257))
    for batch in batches:
        assert len(batch) * max(max(src[i], tgt[i]) for i in batch) <= max_tokens
    assert mt.token_batches(src, tgt, max_tokens) == batches  # deterministic
    with pytest.raises(ValueError, match="max_tokens=5"):
        mt.token_batches(src, tgt, 5)


def test_collate_shifts_target_and_pads(corpus, tmp_path):
    data = mt.load_translation_data(corpus, vocab_size=60, cache_dir=tmp_path / "cache")
    split = data.splits["val"]
    indices = split.batches(max_tokens=64)[0]
    batch = split.collate(indices)
    assert batch["tgt_in"].shape == batch["tgt_out"].shape
    assert batch["src"].shape[0] == len(indices) and batch["src"].numel() <= 64
    for row, i in enumerate(indices):
        n = len(split.tgt_ids[i])
        assert batch["tgt_in"][row, 0] == mt.BOS_ID
        assert batch["tgt_in"][row, 1 : n + 1].tolist() == split.tgt_ids[i]
        assert batch["tgt_out"][row, :n].tolist() == split.tgt_ids[i]
        assert batch["tgt_out"][row, n] == mt.EOS_ID
        assert (batch["tgt_out"][row, n + 1 :] == mt.PAD_ID).all()
        assert batch["src"][row, len(split.src_ids[i])] == mt.EOS_ID


@pytest.mark.skipif(not MULTI30K.is_dir(), reason="Multi30K not available")
def test_real_multi30k_loads():
    sizes = {split: len(mt.read_parallel(MULTI30K, split, "de", "en")[0]) for split in mt.SPLIT_FILES}
    assert sizes == {"train": 29000, "val": 1014, "test": 1000}
    src, tgt = mt.read_parallel(MULTI30K, "train", "de", "en")
    assert src[0].startswith("Zwei junge weiße Männer") and tgt[0].startswith("Two young")
    with pytest.raises(ValueError, match="'fr' not found"):
        mt.read_parallel(MULTI30K, "train", "de", "fr")
