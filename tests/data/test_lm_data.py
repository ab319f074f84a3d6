import gzip
import lzma
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import sst.data.tokenizer as tokenizer_module
from sst.data.lm import (
    BUILTIN_CORPUS,
    check_sequences,
    load_lm_data,
    num_sequences,
    pack,
    read_text,
    resolve_sources,
    split_documents,
    stream_hf_documents,
    validation_mask,
)
from sst.data.tokenizer import EOT, train_tokenizer
from sst.errors import DataError

PROSE = [
    "The quick brown fox jumps over the lazy dog. It was a bright cold day in April.",
    "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea.",
    "It is a truth universally acknowledged that a single man must be in want of a wife.",
    "Happy families are all alike; every unhappy family is unhappy in its own way.",
]


def write_corpus(folder: Path, n_docs: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    docs = [f"Document {i}. " + PROSE[i % len(PROSE)] + f" Line two of {i}.\nMore text." for i in range(n_docs)]
    half = n_docs // 2
    (folder / "a.txt").write_text("\n\n".join(docs[:half]))
    with gzip.open(folder / "b.txt.gz", "wt") as f:
        f.write("\n\n".join(docs[half:]))
    (folder / "ignored.json").write_text('{"not": "text"}')
    return folder


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, load_lm_data(["builtin"], vocab_size=8192, cache_dir=cache)


def test_builtin_corpus_is_shipped_compressed_and_small():
    assert BUILTIN_CORPUS.is_file() and BUILTIN_CORPUS.suffix == ".xz"
    assert BUILTIN_CORPUS.stat().st_size < 3_000_000
    docs = split_documents(read_text(BUILTIN_CORPUS))
    assert len(docs) == 1189
    assert docs[0].startswith("In the beginning God created the heaven and the earth.")
    assert (BUILTIN_CORPUS.parent / "README.md").is_file()


def test_builtin_splits_and_document_separators(builtin):
    _, data = builtin
    assert data.vocab_size == 8192
    assert (data.n_train_documents, data.n_val_documents) == (1189 - 59, 59)
    assert data.train.dtype == np.uint16
    eot = data.tokenizer.token_to_id(EOT)
    assert int((data.train == eot).sum()) == data.n_train_documents
    assert int((data.val == eot).sum()) == data.n_val_documents
    assert data.train[-1] == eot and data.val[-1] == eot
    assert 800_000 < len(data.train) < 1_100_000 and 30_000 < len(data.val) < 70_000


def test_tokenizer_round_trip(builtin):
    tok = builtin[1].tokenizer
    for text in ["And God said, Let there be light.", "naïve café, Zürich — 東京 🙂\n\ttabs  and  spaces"]:
        ids = tok.encode(text).ids
        assert tok.decode(ids) == text
    assert len(tok.encode("And the LORD said unto Moses").ids) <= 8  # common words are merged
    assert tok.encode(EOT).ids == [tok.token_to_id(EOT)]


def test_cache_is_reused_without_retraining(builtin, monkeypatch):
    cache, first = builtin
    mtime = first.tokenizer_path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the tokenizer was trained again")

    monkeypatch.setattr(tokenizer_module, "train_tokenizer", no_training)
    again = load_lm_data(["builtin"], vocab_size=8192, cache_dir=cache)
    assert again.tokenizer_path == first.tokenizer_path
    assert again.tokenizer_path.stat().st_mtime_ns == mtime
    assert np.array_equal(again.train, first.train) and np.array_equal(again.val, first.val)
    assert not list(cache.rglob("*.tmp"))  # atomic writes leave no temporary files


def test_local_folder_sources_and_determinism(tmp_path):
    folder = write_corpus(tmp_path / "corpus")
    a = load_lm_data([str(folder)], vocab_size=300, val_fraction=0.1, cache_dir=tmp_path / "c1")
    b = load_lm_data([str(folder)], vocab_size=300, val_fraction=0.1, cache_dir=tmp_path / "c2")
    assert (a.n_train_documents, a.n_val_documents) == (36, 4)  # the .json file is not read
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    text = a.tokenizer.decode(a.val.tolist())
    assert "Document 9." in text and "Document 19." in text and "Document 8." not in text
    # a different vocabulary size, or an edited file, gets its own cache entries
    c = load_lm_data([str(folder)], vocab_size=280, val_fraction=0.1, cache_dir=tmp_path / "c1")
    assert c.tokenizer_path != a.tokenizer_path and c.vocab_size == 280
    with lzma.open(folder / "c.txt.xz", "wt") as f:
        f.write("A new document.\n\nAnd another one.")
    d = load_lm_data([str(folder)], vocab_size=300, val_fraction=0.1, cache_dir=tmp_path / "c1")
    assert d.n_train_documents + d.n_val_documents == 42 and d.tokenizer_path != a.tokenizer_path


def test_validation_mask_is_evenly_spaced():
    mask = validation_mask(100, 0.05)
    assert mask.sum() == 5
    assert np.flatnonzero(mask).tolist() == [19, 39, 59, 79, 99]
    assert validation_mask(1189, 0.05).sum() == 59


def test_packing_windows_overlap_by_one_token():
    tokens = np.arange(50, dtype=np.uint16)
    assert num_sequences(50, 8) == 6 and num_sequences(9, 8) == 1 and num_sequences(8, 8) == 0
    rows = pack(tokens, 8, np.array([0, 5, 2]))
    assert rows.dtype == np.int64 and rows.shape == (3, 9)
    assert rows[0].tolist() == list(range(0, 9))
    assert rows[1].tolist() == list(range(40, 49))
    assert rows[2].tolist() == list(range(16, 25))


def test_split_documents_on_blank_lines():
    assert split_documents("a b\nc\n\n  \n\nd\r\n\r\ne\n\n") == ["a b\nc", "d", "e"]


# --- error paths -----------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        load_lm_data([str(tmp_path / "no_such_dir")], cache_dir=tmp_path)


def test_empty_corpus_and_empty_folder(tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n\n")
    with pytest.raises(ValueError, match="empty corpus"):
        load_lm_data([str(tmp_path / "empty.txt")], vocab_size=300, cache_dir=tmp_path / "c")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="folder has no"):
        load_lm_data([str(tmp_path / "folder")], cache_dir=tmp_path / "c")


def test_too_few_documents_for_a_validation_split(tmp_path):
    (tmp_path / "one.txt").write_text("only one document here")
    with pytest.raises(ValueError, match="1 document"):
        load_lm_data([str(tmp_path / "one.txt")], vocab_size=300, cache_dir=tmp_path / "c")


def test_sequence_longer_than_the_split_names_the_numbers():
    with pytest.raises(ValueError, match="the val split has 100 tokens: 0 sequence.*seq_len 128"):
        check_sequences("val", 100, 128)
    assert check_sequences("train", 1000, 99, needed=10) == 10


def test_unknown_source_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown data source 's3://bucket'"):
        resolve_sources(["s3://bucket"])
    with pytest.raises(ValueError, match="no data sources"):
        resolve_sources([])
    with pytest.raises(ValueError, match="character budget"):
        resolve_sources(["hf:c4"], max_chars=0)
    with pytest.raises(ValueError, match="val_fraction"):
        load_lm_data(["builtin"], val_fraction=0.0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="vocab_size 100 is too small"):
        train_tokenizer(["some text"], 100)


def test_hf_source_without_datasets_package(monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'sparse-spectral-training\[hf\]'"):
        stream_hf_documents("c4", 1000)


def test_hf_source_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="needs internet"):
        stream_hf_documents("openwebtext", 1000)


def fake_datasets(rows=None, error=None):
    calls = []

    def load_dataset(path, config, split, streaming):
        calls.append((path, config, split, streaming))
        if error is not None:
            raise error
        return iter(rows)

    return types.SimpleNamespace(load_dataset=load_dataset), calls


def test_hf_source_network_failure_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    module, calls = fake_datasets(error=ConnectionError("no route to host"))
    monkeypatch.setitem(sys.modules, "datasets", module)
    with pytest.raises(DataError, match="could not stream Hugging Face dataset 'allenai/c4'.*no route"):
        stream_hf_documents("c4", 1000)
    assert calls == [("allenai/c4", "en", "train", True)]


def test_hf_source_streams_until_the_budget(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    rows = [{"text": f"{PROSE[i % 4]} ({i})"} for i in range(1000)]
    module, calls = fake_datasets(rows=rows)
    monkeypatch.setitem(sys.modules, "datasets", module)
    docs = stream_hf_documents("user/corpus:sub", 2000)
    assert calls == [("user/corpus", "sub", "train", True)]
    assert 2000 <= sum(map(len, docs)) < 2200 and docs[0] == rows[0]["text"]
    data = load_lm_data(["hf:openwebtext"], vocab_size=300, val_fraction=0.1, cache_dir=tmp_path, max_chars=5000)
    assert data.n_train_documents + data.n_val_documents == len(stream_hf_documents("openwebtext", 5000))
