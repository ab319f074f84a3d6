"""Graph datasets by name: the Planetoid graphs, HGCN's Airport and Disease-LP, the generated
Disease-like tree, or ``path:<folder>`` for a user's own graph (format: sst.data.graph_folder)."""

from __future__ import annotations

import os

from sst.data.graph_folder import load_graph_folder
from sst.data.graphs import Graph, load_airport, load_disease_lp, make_disease_tree
from sst.data.planetoid import PLANETOID, load_planetoid
from sst.errors import ConfigError

GRAPH_DATASETS = (*PLANETOID, "airport", "disease_lp", "disease_tree")
FOLDER_PREFIX = "path:"


def check_dataset_name(name: str, key: str = "task.dataset") -> None:
    """Raise ConfigError naming ``key`` unless ``name`` is one of GRAPH_DATASETS or path:<folder>."""
    if name in GRAPH_DATASETS:
        return
    if name.startswith(FOLDER_PREFIX) and name[len(FOLDER_PREFIX):].strip():
        return
    raise ConfigError(f"{key}: {name!r} is not one of {list(GRAPH_DATASETS)} or {FOLDER_PREFIX}<folder>")


def load_graph(name: str, data_dir: str | os.PathLike = "", split_seed: int = 0, tree_nodes: int = 1000,
               download: bool = False, cache_dir: str | os.PathLike = "") -> Graph:
    """The graph ``name`` (see GRAPH_DATASETS; ``disease_tree`` is generated with ``split_seed``,
    which also draws the random node split of Airport, Disease-LP and folders without split files);
    ``download`` lets a missing Planetoid dataset be fetched into the cache."""
    check_dataset_name(name, "dataset")
    if name.startswith(FOLDER_PREFIX):
        return load_graph_folder(name[len(FOLDER_PREFIX):].strip(), split_seed)
    if name in PLANETOID:
        return load_planetoid(name, data_dir, download=download, cache_dir=cache_dir)
    if name == "airport":
        return load_airport(data_dir, split_seed)
    if name == "disease_lp":
        return load_disease_lp(data_dir, split_seed)
    return make_disease_tree(tree_nodes, seed=split_seed)
