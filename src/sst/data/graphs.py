"""Graph datasets for hyperbolic node classification and link prediction (HGCN/HyboNet setups).

A ``Graph`` holds node features (n, f), an undirected edge list stored in both directions (2, E),
integer labels and a node split. Loaders read Cora (Planetoid raw files, standard 140/500/1000
split), Airport and Disease-LP (HGCN files, 70/15/15 random node split) and generate a Disease-like
SIR tree. ``split_edges`` makes the 85/5/10 link-prediction split with sampled non-edges.
"""

from __future__ import annotations

import csv
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

GRAPH_DATASETS = ("cora", "airport", "disease_lp", "disease_tree")
AIRPORT_LABEL_BINS = (7 / 7, 8 / 7, 9 / 7)


@dataclass
class Graph:
    """An undirected graph with node features, labels and a node split.

    features (n, f) float32; edge_index (2, E) int64 with both directions of every undirected edge,
    no self loops, no duplicates; labels (n,) int64; train_idx / val_idx / test_idx node ids.
    """

    name: str
    features: torch.Tensor
    edge_index: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return self.features.shape[0]

    @property
    def num_edges(self) -> int:
        """Number of undirected edges."""
        return self.edge_index.shape[1] // 2


@dataclass
class LinkSplit:
    """Edges split for link prediction; pairs are (2, m) with row 0 < row 1.

    ``train_edge_index`` (2, 2 * m_train) is the message-passing graph (training edges only, both
    directions): validation and test edges are hidden from the encoder.
    """

    train_pos: torch.Tensor
    val_pos: torch.Tensor
    val_neg: torch.Tensor
    test_pos: torch.Tensor
    test_neg: torch.Tensor
    train_edge_index: torch.Tensor


# --------------------------------------------------------------------------------------------
# Locating files


def resolve_data_dir(data_dir: str | os.PathLike = "") -> Path:
    """The shared data directory: ``data_dir`` if given, else $SST_DATA_DIR, else the first existing
    of ./shared/data, ../shared/data (relative to the working directory, then to the repository)."""
    if data_dir:
        return Path(data_dir)
    if os.environ.get("SST_DATA_DIR"):
        return Path(os.environ["SST_DATA_DIR"])
    repo = Path(__file__).resolve().parents[3]
    candidates = [Path("shared/data"), Path("../shared/data"), repo / "shared/data", repo.parent / "shared/data"]
    for c in candidates:
        if c.is_dir():
            return c
    return Path("../shared/data")


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"graph data file not found: {path} (set task.data_dir or $SST_DATA_DIR to the directory "
            f"holding planetoid/ and hgcn/; see shared/data/README.md)"
        )
    return path


# --------------------------------------------------------------------------------------------
# Building blocks


def undirected_edge_index(pairs: np.ndarray | torch.Tensor, num_nodes: int, source: str = "edges") -> torch.Tensor:
    """Node pairs (m, 2) -> (2, E) with both directions, self loops and duplicates removed.

    Raises ValueError naming ``source`` when an id is outside [0, num_nodes).
    """
    pairs = torch.as_tensor(np.asarray(pairs), dtype=torch.int64).reshape(-1, 2)
    if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= num_nodes):
        raise ValueError(
            f"{source}: edge node ids must lie in [0, {num_nodes}), got range "
            f"[{int(pairs.min())}, {int(pairs.max())}]"
        )
    u, v = pairs[:, 0], pairs[:, 1]
    keep = u != v
    lo, hi = torch.minimum(u, v)[keep], torch.maximum(u, v)[keep]
    keys = torch.unique(lo * num_nodes + hi)
    lo, hi = keys // num_nodes, keys % num_nodes
    return torch.stack([torch.cat([lo, hi]), torch.cat([hi, lo])])


def unique_pairs(edge_index: torch.Tensor) -> torch.Tensor:
    """(2, E) both-direction edges -> (2, E/2) pairs with row 0 < row 1, sorted."""
    mask = edge_index[0] < edge_index[1]
    return edge_index[:, mask]


def _pair_keys(pairs: torch.Tensor, num_nodes: int) -> torch.Tensor:
    return pairs[0] * num_nodes + pairs[1]


def random_node_split(
    num_nodes: int, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded random (train, val, test) node ids, e.g. 70/15/15."""
    perm = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = round(val_fraction * num_nodes), round(test_fraction * num_nodes)
    val, test, train = perm[:n_val], perm[n_val : n_val + n_test], perm[n_val + n_test :]
    return train.sort().values, val.sort().values, test.sort().values


def sample_negative_edges(
    num_nodes: int,
    num: int,
    forbidden: torch.Tensor,
    generator: torch.Generator,
    distinct: bool = True,
    max_rounds: int = 100,
) -> torch.Tensor:
    """Sample ``num`` node pairs (2, num) with u < v that are not in ``forbidden``.

    forbidden: (2, m) pairs with row 0 < row 1 (edges, or already used negatives). ``distinct``
    makes the sampled pairs unique (for evaluation sets); training negatives may repeat.
    Rejection sampling: cheap for sparse graphs, and it never materialises the n^2 non-edges.
    """
    if num == 0:
        return torch.zeros(2, 0, dtype=torch.int64)
    forbidden_keys = _pair_keys(forbidden, num_nodes)
    found = torch.zeros(0, dtype=torch.int64)
    for _ in range(max_rounds):
        draw = 2 * (num - found.numel()) + 16
        u = torch.randint(0, num_nodes, (draw,), generator=generator)
        v = torch.randint(0, num_nodes, (draw,), generator=generator)
        lo, hi = torch.minimum(u, v), torch.maximum(u, v)
        keys = (lo * num_nodes + hi)[lo != hi]
        keys = keys[~torch.isin(keys, forbidden_keys)]
        if distinct:
            keys = keys[~torch.isin(keys, found)]
            # keep the first occurrence of each key, in draw order, for reproducibility
            uniq, inverse = torch.unique(keys, return_inverse=True)
            first = torch.full((uniq.numel(),), keys.numel(), dtype=torch.int64)
            first = first.scatter_reduce(0, inverse, torch.arange(keys.numel()), reduce="amin")
            keys = keys[first.sort().values]
        found = torch.cat([found, keys])[:num]
        if found.numel() == num:
            return torch.stack([found // num_nodes, found % num_nodes])
    raise ValueError(
        f"could not sample {num} non-edges among {num_nodes} nodes: the graph is too dense"
    )


def split_edges(graph: Graph, seed: int, val_fraction: float = 0.05, test_fraction: float = 0.10) -> LinkSplit:
    """HGCN-style link-prediction split: edges 85/5/10, val/test with as many sampled non-edges.

    Non-edges are non-edges of the whole graph and are distinct across val and test.
    """
    pairs = unique_pairs(graph.edge_index)
    m = pairs.shape[1]
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(m, generator=gen)
    n_val, n_test = int(val_fraction * m), int(test_fraction * m)
    val, test, train = perm[:n_val], perm[n_val : n_val + n_test], perm[n_val + n_test :]
    neg = sample_negative_edges(graph.num_nodes, n_val + n_test, pairs, gen, distinct=True)
    train_pos = pairs[:, train.sort().values]
    return LinkSplit(
        train_pos=train_pos,
        val_pos=pairs[:, val],
        val_neg=neg[:, :n_val],
        test_pos=pairs[:, test],
        test_neg=neg[:, n_val:],
        train_edge_index=torch.cat([train_pos, train_pos.flip(0)], dim=1),
    )


def _make_graph(name, features, pairs, labels, split, source) -> Graph:
    features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    n = features.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"{source}: {labels.shape[0]} labels for {n} feature rows")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"{source}: labels must be non-negative, got {int(labels.min())}")
    edge_index = undirected_edge_index(pairs, n, source)
    train, val, test = split
    return Graph(name, features, edge_index, labels, int(labels.max()) + 1, train, val, test)


# --------------------------------------------------------------------------------------------
# Datasets


def _unpickle(path: Path):
    # The Planetoid files are Python-2 pickles of numpy arrays and scipy.sparse matrices.
    try:
        import scipy.sparse  # noqa: F401  (needed by pickle to rebuild the sparse matrices)
    except ImportError as err:
        raise ImportError(
            "loading Cora needs scipy: pip install 'sparse-spectral-training[graph]'"
        ) from err
    with open(_require(path), "rb") as f, warnings.catch_warnings():
        # the pickles name the old scipy.sparse.csr module path, which scipy flags as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return pickle.load(f, encoding="latin1")


def load_cora(data_dir: str | os.PathLike = "", normalize_features: bool = True) -> Graph:
    """Cora from the Planetoid raw files in <data_dir>/planetoid/Cora/raw: 2708 nodes, 1433
    features, 7 classes, standard split (train = first 140, val = next 500, test = the 1000 ids in
    ind.cora.test.index). ``normalize_features`` scales each row to sum 1 (the usual practice)."""
    raw = resolve_data_dir(data_dir) / "planetoid" / "Cora" / "raw"
    parts = {k: _unpickle(raw / f"ind.cora.{k}") for k in ("x", "y", "tx", "ty", "allx", "ally", "graph")}
    test_path = _require(raw / "ind.cora.test.index")
    test_ids = np.array([int(line) for line in test_path.read_text().split()], dtype=np.int64)
    allx, tx = parts["allx"].toarray(), parts["tx"].toarray()
    if len(test_ids) != tx.shape[0]:
        raise ValueError(f"{test_path}: {len(test_ids)} test ids for {tx.shape[0]} rows of ind.cora.tx")
    features = np.vstack([allx, tx]).astype(np.float32)
    labels_onehot = np.vstack([parts["ally"], parts["ty"]])
    # Rows of tx/ty are stored in sorted-id order; put them at their true node ids.
    order = np.sort(test_ids)
    features[test_ids] = features[order]
    labels_onehot[test_ids] = labels_onehot[order]
    if normalize_features:
        features = features / np.maximum(features.sum(1, keepdims=True), 1e-12)
    pairs = [(u, v) for u, nbrs in parts["graph"].items() for v in nbrs]
    n_train = parts["y"].shape[0]
    split = (
        torch.arange(n_train),
        torch.arange(n_train, n_train + 500),
        torch.as_tensor(np.sort(test_ids)),
    )
    return _make_graph("cora", features, np.array(pairs, dtype=np.int64), labels_onehot.argmax(1), split,
                       str(raw / "ind.cora.graph"))


def load_airport(data_dir: str | os.PathLike = "", split_seed: int = 0) -> Graph:
    """Airport (HGCN): features = columns 0-3 of ``feats``; label = column 4 binned at
    [7/7, 8/7, 9/7] (4 classes, shifted to start at 0); 70/15/15 random node split."""
    path = _require(resolve_data_dir(data_dir) / "hgcn" / "airport" / "airport.npz")
    with np.load(path) as data:
        for key in ("edges", "feats"):
            if key not in data.files:
                raise ValueError(f"{path}: missing array {key!r} (has {data.files})")
        edges, feats = data["edges"], data["feats"]
    if feats.ndim != 2 or feats.shape[1] < 5:
        raise ValueError(f"{path}: 'feats' must be (n, 5), got {feats.shape}")
    labels = np.digitize(feats[:, 4], AIRPORT_LABEL_BINS)
    labels = labels - labels.min()
    split = random_node_split(feats.shape[0], split_seed)
    return _make_graph("airport", feats[:, :4], edges, labels, split, f"{path} 'edges'")


def _load_csr_npz(path: Path) -> np.ndarray:
    # A scipy.sparse.save_npz CSR file read with numpy alone, so scipy stays optional.
    with np.load(path) as data:
        if "format" not in data.files or data["format"].item() not in (b"csr", "csr"):
            raise ValueError(f"{path}: expected a scipy CSR matrix saved with save_npz")
        indptr, indices, values = data["indptr"], data["indices"], data["data"]
        shape = tuple(int(s) for s in data["shape"])
    dense = np.zeros(shape, dtype=np.float32)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    dense[rows, indices] = values
    return dense


def load_disease_lp(data_dir: str | os.PathLike = "", split_seed: int = 0) -> Graph:
    """Disease-LP (HGCN): a tree of 2665 nodes, 11 features, binary SIR labels; 70/15/15 node split."""
    root = resolve_data_dir(data_dir) / "hgcn" / "disease_lp"
    edges_path = _require(root / "disease_lp.edges.csv")
    feats = _load_csr_npz(_require(root / "disease_lp.feats.npz"))
    labels = np.load(_require(root / "disease_lp.labels.npy"))
    with open(edges_path, newline="") as f:
        try:
            pairs = [(int(r[0]), int(r[1])) for r in csv.reader(f) if r]
        except (ValueError, IndexError) as err:
            raise ValueError(f"{edges_path}: expected lines 'u,v' of integer node ids ({err})") from err
    if labels.shape[0] != feats.shape[0]:
        raise ValueError(
            f"{root / 'disease_lp.labels.npy'}: {labels.shape[0]} labels for {feats.shape[0]} rows "
            f"of disease_lp.feats.npz"
        )
    split = random_node_split(feats.shape[0], split_seed)
    return _make_graph("disease_lp", feats, np.array(pairs, dtype=np.int64), labels, split, str(edges_path))


def make_disease_tree(num_nodes: int = 1000, num_features: int = 8, seed: int = 0) -> Graph:
    """A Disease-like graph generated in code: a random tree with an SIR outbreak on it.

    Tree: node i > 0 attaches to a uniformly random earlier node. Each node has a susceptibility
    s_i ~ U(0, 1); the outbreak starts at 5% of the nodes and crosses each tree edge to an
    uninfected neighbour j with probability sqrt(s_j) (about 40% end infected). Label = ever infected (2 classes). Features:
    a noisy s_i (informative but not decisive) and a Brownian "position" that drifts along tree
    edges (so neighbours have similar features, as in the HGCN data). Split 70/15/15 by ``seed``.
    """
    if num_nodes < 10:
        raise ValueError(f"make_disease_tree: num_nodes must be >= 10, got {num_nodes}")
    if num_features < 2:
        raise ValueError(f"make_disease_tree: num_features must be >= 2, got {num_features}")
    rng = np.random.default_rng(seed)
    parent = np.concatenate([[0], [rng.integers(0, i) for i in range(1, num_nodes)]])
    pairs = np.stack([parent[1:], np.arange(1, num_nodes)], axis=1)
    nbrs: list[list[int]] = [[] for _ in range(num_nodes)]
    for p, c in pairs:
        nbrs[p].append(c)
        nbrs[c].append(p)
    suscept = rng.uniform(0, 1, num_nodes)
    infected = np.zeros(num_nodes, dtype=bool)
    frontier = list(rng.choice(num_nodes, size=max(1, num_nodes // 20), replace=False))
    infected[frontier] = True
    while frontier:
        nxt = []
        for i in frontier:
            for j in nbrs[i]:
                if not infected[j] and rng.uniform() < np.sqrt(suscept[j]):
                    infected[j] = True
                    nxt.append(j)
        frontier = nxt
    position = np.zeros((num_nodes, num_features - 1))
    steps = rng.normal(0, 0.3, (num_nodes, num_features - 1))
    for i in range(1, num_nodes):  # parents precede children, so one pass suffices
        position[i] = position[parent[i]] + steps[i]
    noisy_s = suscept + rng.normal(0, 0.2, num_nodes)
    features = np.concatenate([noisy_s[:, None], position], axis=1)
    split = random_node_split(num_nodes, seed)
    return _make_graph("disease_tree", features, pairs, infected.astype(np.int64), split, "disease_tree")


def load_graph(
    name: str, data_dir: str | os.PathLike = "", split_seed: int = 0, tree_nodes: int = 1000
) -> Graph:
    """Load one of GRAPH_DATASETS by name (``disease_tree`` is generated with ``split_seed``)."""
    if name == "cora":
        return load_cora(data_dir)
    if name == "airport":
        return load_airport(data_dir, split_seed)
    if name == "disease_lp":
        return load_disease_lp(data_dir, split_seed)
    if name == "disease_tree":
        return make_disease_tree(tree_nodes, seed=split_seed)
    raise ValueError(f"unknown graph dataset {name!r}; choose one of {GRAPH_DATASETS}")
