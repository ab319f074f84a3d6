"""A user's own graph as a folder of plain files (``task.dataset: path:/the/folder``).

    edges.csv | edges.txt     required: one undirected edge per line, "u,v" (or "u v"): node ids
                              0 .. n-1; blank and "#" lines skipped, also a header line of names
    features.npy | features.csv  required: (n, f) numbers; .csv: one node per line, f values
    labels.npy | labels.csv   n integers >= 0 (.csv: one per line); needed for node classification
    train.npy, val.npy, test.npy  optional, all three or none: node ids; default 70/15/15 random

n is the number of feature rows. Every problem raises sst.errors.DataError (MissingDataError for a
missing file) naming the file and the row.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sst.data.graphs import Graph, load_npy, make_graph, random_node_split, read_edge_list, text_lines
from sst.errors import DataError, MissingDataError

SPLIT_PARTS = ("train", "val", "test")


def _one_of(folder: Path, stem: str, suffixes: tuple[str, ...], required: bool) -> Path | None:
    found = [folder / f"{stem}{s}" for s in suffixes if (folder / f"{stem}{s}").is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: both {found[0].name} and {found[1].name} exist; keep one")
    if not found and required:
        names = " or ".join(f"{stem}{s}" for s in suffixes)
        raise MissingDataError(f"{folder}: missing {names} (see sst.data.graph_folder for the format)")
    return found[0] if found else None


def read_number_table(path: Path, integer: bool) -> np.ndarray:
    """A CSV of numbers -> (rows, columns) float64 (or int64 with ``integer``); every line must have
    the first line's number of values. Blank lines and "#" lines are skipped."""
    rows, width = [], None
    for number, line in enumerate(text_lines(path), start=1):
        fields = [f.strip() for f in line.split(",")]
        if fields == [""] or fields[0].startswith("#"):
            continue
        try:
            rows.append([int(f) if integer else float(f) for f in fields])
        except ValueError:
            kind = "integers" if integer else "numbers"
            raise DataError(f"{path}: line {number}: expected comma-separated {kind}, "
                            f"got {line.strip()!r}") from None
        width = width or (len(fields), number)
        if len(fields) != width[0]:
            raise DataError(f"{path}: line {number}: {len(fields)} values, but line {width[1]} "
                            f"has {width[0]}")
    if not rows:
        raise DataError(f"{path}: no rows")
    return np.array(rows, dtype=np.int64 if integer else np.float64)


def _load_array(path: Path, integer: bool) -> np.ndarray:
    return read_number_table(path, integer) if path.suffix == ".csv" else load_npy(path)


def load_graph_folder(folder: str | os.PathLike, split_seed: int = 0) -> Graph:
    """The graph in ``folder`` (format in the module docstring); named after the folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MissingDataError(f"graph folder {folder} does not exist (task.dataset: path:<folder>)")
    edges_path = _one_of(folder, "edges", (".csv", ".txt"), required=True)
    features_path = _one_of(folder, "features", (".npy", ".csv"), required=True)
    labels_path = _one_of(folder, "labels", (".npy", ".csv"), required=False)
    features = _load_array(features_path, integer=False)
    labels = _load_array(labels_path, integer=True) if labels_path else None
    pairs, lines = read_edge_list(edges_path)
    split_paths = {part: folder / f"{part}.npy" for part in SPLIT_PARTS}
    present = [part for part, path in split_paths.items() if path.is_file()]
    if present and len(present) < len(SPLIT_PARTS):
        absent = [f"{p}.npy" for p in SPLIT_PARTS if p not in present]
        raise DataError(f"{folder}: has {[f'{p}.npy' for p in present]} but not {absent}: give all three "
                             f"split files or none (a 70/15/15 random split)")
    if present:
        split = tuple(_load_array(split_paths[part], integer=True) for part in SPLIT_PARTS)
    else:
        rows = features.shape[0] if features.ndim == 2 else 0
        split = random_node_split(rows, split_seed)
    sources = {"features": str(features_path), "edges": str(edges_path), "labels": str(labels_path),
               **{part: str(path) for part, path in split_paths.items()}}
    return make_graph(folder.name, features, pairs, labels, split, sources, lines)
