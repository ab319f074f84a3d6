"""Planetoid citation graphs (Cora, CiteSeer, PubMed) read with torch_geometric's reader.

Raw files ``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}`` in <data_dir>/planetoid/<Name>/raw
(else the cache, where ``download`` fetches them); standard split: train = the rows of ``x``, val =
the next 500 ids, test = the ids in ``test.index``. CiteSeer's test ids have gaps (isolated nodes
without rows): torch_geometric gives them zero features; they belong to no split.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from sst.data.cache import default_cache_dir
from sst.data.graphs import Graph, make_graph, resolve_data_dir, row_normalize, text_lines
from sst.errors import ConfigError, DataError, DependencyError, MissingDataError

# name -> the folder torch_geometric.datasets.Planetoid uses
PLANETOID = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
GRAPH_INSTALL = "pip install 'sparse-spectral-training[graph]'"


def planetoid_files(raw: Path, name: str) -> list[Path]:
    """The eight raw files of Planetoid dataset ``name`` in folder ``raw``."""
    return [raw / f"ind.{name}.{part}" for part in PLANETOID_PARTS]


def read_test_index(path: Path) -> np.ndarray:
    """The node ids (k,) of ``ind.<name>.test.index``, one per line, in file order (tx row order)."""
    ids = []
    for number, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            ids.append(int(line))
        except ValueError:
            raise DataError(f"{path}: line {number}: {line.strip()!r} is not an integer node id") from None
        if ids[-1] < 0:
            raise DataError(f"{path}: line {number}: node id {ids[-1]} is negative")
    if not ids:
        raise DataError(f"{path}: no test node ids")
    ids = np.array(ids, dtype=np.int64)
    unique, first = np.unique(ids, return_index=True)
    if len(unique) != len(ids):
        again = sorted(set(range(len(ids))) - set(first.tolist()))[0]
        raise DataError(f"{path}: line {again + 1}: node id {ids[again]} appears twice")
    return ids


def _torch_geometric_reader():
    try:
        from torch_geometric.io import read_planetoid_data
    except ImportError as err:
        raise DependencyError(
            f"the Planetoid datasets {sorted(PLANETOID)} are read with torch_geometric, which is not "
            f"installed ({err}): {GRAPH_INSTALL}"
        ) from None
    return read_planetoid_data


def download_planetoid(name: str, raw: Path) -> Path:
    """Fetch the raw files of ``name`` into ``raw`` from torch_geometric's Planetoid source (internet)."""
    _torch_geometric_reader()
    from torch_geometric.data import download_url
    from torch_geometric.datasets import Planetoid

    for path in planetoid_files(raw, name):
        if not path.is_file():
            download_url(f"{Planetoid.url}/{path.name}", str(raw), log=False)
    return raw


def planetoid_raw_dir(name: str, data_dir: str | os.PathLike = "", download: bool = False,
                      cache_dir: str | os.PathLike = "") -> Path:
    """The folder holding all raw files of ``name``: <data_dir>/planetoid/<Name>/raw, else the
    cache's planetoid/<Name>/raw, else (``download``) the cache folder after fetching them."""
    folder = PLANETOID[name]
    places = [resolve_data_dir(data_dir) / "planetoid" / folder / "raw",
              default_cache_dir(cache_dir) / "planetoid" / folder / "raw"]
    for raw in places:
        if all(p.is_file() for p in planetoid_files(raw, name)):
            return raw
    if download:
        return download_planetoid(name, places[1])
    missing = [p.name for p in planetoid_files(places[0], name) if not p.is_file()]
    raise MissingDataError(
        f"Planetoid dataset {name!r}: {places[0]} lacks {missing} (and {places[1]} is incomplete); "
        f"set task.data_dir or $SST_DATA_DIR to a folder holding planetoid/{folder}/raw, or set "
        f"task.download=true on a machine with internet"
    )


def load_planetoid(name: str, data_dir: str | os.PathLike = "", normalize_features: bool = True,
                   download: bool = False, cache_dir: str | os.PathLike = "") -> Graph:
    """Planetoid dataset ``name`` (cora 2708 nodes / 1433 features / 7 classes, citeseer 3327 /
    3703 / 6, pubmed 19717 / 500 / 3) with the standard split; ``normalize_features`` scales each
    row to sum 1 (the usual practice). Raises DataError naming the file at fault."""
    if name not in PLANETOID:
        raise ConfigError(f"unknown Planetoid dataset {name!r}; choose one of {sorted(PLANETOID)}")
    read_planetoid_data = _torch_geometric_reader()
    raw = planetoid_raw_dir(name, data_dir, download, cache_dir)
    test_path = raw / f"ind.{name}.test.index"
    test_ids = read_test_index(test_path)
    try:
        data = read_planetoid_data(str(raw), name)
    except ModuleNotFoundError as err:  # the pickles hold scipy.sparse matrices
        raise DependencyError(f"reading {raw}/ind.{name}.* needs {err.name}: {GRAPH_INSTALL}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, KeyError, TypeError, ValueError, IndexError,
            RuntimeError) as err:  # a malformed pickle, or arrays that do not fit together
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise DataError(f"{raw}/ind.{name}.{{x,tx,allx,y,ty,ally,graph}}: torch_geometric could not "
                             f"read them: {type(err).__name__}: {reason}") from None
    features = data.x.numpy()
    n = features.shape[0]
    if int(test_ids.max()) >= n:
        raise DataError(f"{test_path}: node id {int(test_ids.max())} is beyond the {n} rows of "
                             f"ind.{name}.allx and ind.{name}.tx")
    if normalize_features:
        features = row_normalize(features)
    split = tuple(mask.nonzero().squeeze(1).numpy() for mask in (data.train_mask, data.val_mask, data.test_mask))
    sources = {"features": f"{raw}/ind.{name}.allx+tx", "edges": f"{raw}/ind.{name}.graph",
               "labels": f"{raw}/ind.{name}.ally+ty", "train": f"{raw}/ind.{name}.x",
               "val": f"{name} validation ids", "test": str(test_path)}
    return make_graph(name, features, data.edge_index.T.numpy(), data.y.numpy(), split, sources)
