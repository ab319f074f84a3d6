"""A datasets.Dataset / IterableDataset with a text column is LM data from Python."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sst.data.hf_dataset import dataset_source
from sst.data.lm import load_lm_data
from sst.errors import ConfigError, DataError, MissingDataError
from sst.tasks.lm import LMTaskConfig

datasets = pytest.importorskip("datasets")

WORDS = "the a spectral singular value low rank training model layer matrix vector".split()


@pytest.fixture(scope="module")
def texts():
    rng = random.Random(1)
    return [" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(30)]


def test_a_dataset_gives_the_same_tokens_as_the_same_text_in_a_file(tmp_path, texts):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(texts))
    from_file = load_lm_data([str(path)], 300, 0.1, tmp_path / "cache")
    ds = datasets.Dataset.from_dict({"text": texts, "id": list(range(len(texts)))})
    config = LMTaskConfig(data=ds, vocab_size=300, val_fraction=0.1, cache_dir=str(tmp_path / "cache2"))
    assert config.data == [dataset_source(ds)] and config.data[0].startswith("python:dataset:")
    from_dataset = load_lm_data(config.data, 300, 0.1, config.cache_dir)
    assert np.array_equal(from_dataset.train, from_file.train) and np.array_equal(from_dataset.val, from_file.val)


def test_an_iterable_dataset_needs_a_budget_and_streams_up_to_it(tmp_path, texts):
    ds = datasets.Dataset.from_dict({"body": texts}).to_iterable_dataset()
    with pytest.raises(ConfigError, match="max_train_tokens: must be > 0"):
        LMTaskConfig(data=[dataset_source(ds, text_column="body")])
    config = LMTaskConfig(data=[dataset_source(ds, text_column="body")], max_train_tokens=500, vocab_size=300,
                          val_fraction=0.1, cache_dir=str(tmp_path / "cache"))
    data = load_lm_data(config.data, 300, 0.1, config.cache_dir, max_chars=3000)
    assert 0 < data.n_train_documents + data.n_val_documents < len(texts)


def test_bad_datasets_are_named(tmp_path, texts):
    with pytest.raises(DataError, match="no 'text' column"):
        dataset_source(datasets.Dataset.from_dict({"body": texts}))
    with pytest.raises(ConfigError, match="entries must be source names or datasets.Dataset"):
        LMTaskConfig(data=[{"text": "not a dataset"}])
    with pytest.raises(MissingDataError, match="another process"):
        load_lm_data(["python:dataset:0123#text"], 300, 0.1, tmp_path / "cache")
