"""A ``datasets.Dataset`` or ``IterableDataset`` given from Python as language-model data.

The object is registered under a plain source name, ``python:dataset:<fingerprint>#<column>``
(``python:iterable-dataset:...`` when streamed), so run configs stay strings that YAML and resume
checks can hold; each row's text column is one document. The name lives only in this process.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

from sst.errors import DataError, MissingDataError

PREFIX = "python:"
_REGISTERED: dict[str, Any] = {}


def is_hf_dataset(obj: Any) -> bool:
    """True for a ``datasets.Dataset`` / ``IterableDataset`` (without importing ``datasets``)."""
    module = sys.modules.get("datasets")
    return module is not None and isinstance(obj, (module.Dataset, module.IterableDataset))


def is_streamed(source: str) -> bool:
    return source.startswith(PREFIX + "iterable-")


def dataset_source(dataset: Any, text_column: str = "text") -> str:
    """The data-source name of ``dataset`` (registered once per object and column): give it in
    ``task.data`` (``LMTaskConfig(data=[dataset])`` does this for the "text" column)."""
    if not is_hf_dataset(dataset):
        raise DataError(f"task.data: expected a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
    columns = getattr(dataset, "column_names", None)
    if columns is not None and text_column not in columns:
        raise DataError(f"task.data: the {type(dataset).__name__} has no {text_column!r} column "
                        f"(columns: {list(columns)}); pass text_column=")
    for name, known in _REGISTERED.items():
        if known is dataset and name.endswith("#" + text_column):
            return name
    kind = "iterable-dataset" if isinstance(dataset, sys.modules["datasets"].IterableDataset) else "dataset"
    fingerprint = getattr(dataset, "_fingerprint", None) or uuid.uuid4().hex
    name = f"{PREFIX}{kind}:{fingerprint}#{text_column}"
    _REGISTERED[name] = dataset
    return name


def dataset_documents(source: str, max_chars: int = 0) -> list[str]:
    """The non-empty texts of the registered dataset ``source``, up to ``max_chars`` characters
    (0: all; a streamed dataset needs a positive budget)."""
    dataset = _REGISTERED.get(source)
    if dataset is None:
        raise MissingDataError(
            f"task.data: data source {source!r} was a datasets object given from Python in another "
            "process; pass the dataset again (LMTaskConfig(data=[dataset]))")
    column = source.rpartition("#")[2]
    docs, total = [], 0
    for row in dataset:
        if column not in row:
            raise DataError(f"task.data: a row of {source!r} has no {column!r} column (keys: {sorted(row)})")
        text = str(row[column] or "").strip()
        if text:
            docs.append(text)
            total += len(text)
        if max_chars and total >= max_chars:
            break
    return docs
