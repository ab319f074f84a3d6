"""Graphs for hyperbolic node classification and link prediction (HGCN/HyboNet setups).

A ``Graph`` holds node features (n, f), an undirected edge list stored in both directions (2, E),
integer labels and a node split; ``make_graph`` checks every part and names the file and row at
fault (``sst.errors.DataError``). Loaders here read Airport and Disease-LP (HGCN files, 70/15/15 random
node split) and generate a Disease-like SIR tree; ``split_edges`` makes the 85/5/10 edge split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sst.errors import ConfigError, DataError, MissingDataError

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


def require_file(path: Path) -> Path:
    """``path`` if it is a file, else MissingDataError naming it and where data is looked for."""
    if not path.is_file():
        raise MissingDataError(
            f"graph data file not found: {path} (set task.data_dir or $SST_DATA_DIR to the directory "
            f"holding planetoid/ and hgcn/; see shared/data/README.md)"
        )
    return path


def text_lines(path: Path) -> list[str]:
    """The lines of UTF-8 text file ``path``; DataError naming it if it cannot be read as text."""
    try:
        return require_file(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a UTF-8 text file (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from None


def load_npy(path: Path) -> np.ndarray:
    """The array saved in ``path`` (.npy, no pickles); DataError naming it if it is not one."""
    try:
        return np.load(require_file(path), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise DataError(f"{path}: not a readable .npy array ({reason})") from None


# --------------------------------------------------------------------------------------------
# Building blocks


def _where(index: int, lines: np.ndarray | None) -> str:
    # Text files are reported by 1-based line number, arrays by 0-based row index.
    return f"line {int(lines[index])}" if lines is not None else f"row {index}"


def check_node_ids(ids: np.ndarray, num_nodes: int, source: str, lines: np.ndarray | None = None) -> None:
    """Raise DataError naming ``source`` and the first row whose ids leave [0, num_nodes).

    ids: (m,) or (m, k) integers; ``lines`` (m,) gives the text-file line of each row.
    """
    ids = np.asarray(ids)
    if ids.size == 0:
        return
    ids = ids.reshape(len(ids), -1)
    bad = ((ids < 0) | (ids >= num_nodes)).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = int(ids[i][(ids[i] < 0) | (ids[i] >= num_nodes)][0])
        raise DataError(
            f"{source}: {_where(i, lines)}: node id {value} is outside [0, {num_nodes}) "
            f"(the graph has {num_nodes} nodes)"
        )


def undirected_edge_index(
    pairs: np.ndarray | torch.Tensor, num_nodes: int, source: str = "edges", lines: np.ndarray | None = None
) -> torch.Tensor:
    """Node pairs (m, 2) -> (2, E) with both directions, self loops and duplicates removed.

    Raises DataError naming ``source`` and the row (or ``lines`` entry) of an id outside
    [0, num_nodes).
    """
    raw = np.asarray(pairs)
    if raw.size == 0:
        raw = raw.reshape(0, 2)
    if raw.ndim != 2 or raw.shape[1] != 2:
        raise DataError(f"{source}: edges must be node pairs of shape (m, 2), got {raw.shape}")
    if raw.dtype.kind not in "iu":
        whole = np.isfinite(raw) & (raw == np.round(raw)) if raw.dtype.kind == "f" else np.zeros(raw.shape, bool)
        if not whole.all():
            i = int(np.flatnonzero(~whole.all(axis=1))[0])
            raise DataError(f"{source}: {_where(i, lines)}: node ids {raw[i].tolist()} are not integers")
    pairs_np = raw.astype(np.int64)
    check_node_ids(pairs_np, num_nodes, source, lines)
    pairs = torch.as_tensor(pairs_np)
    u, v = pairs[:, 0], pairs[:, 1]
    keep = u != v
    lo, hi = torch.minimum(u, v)[keep], torch.maximum(u, v)[keep]
    keys = torch.unique(lo * num_nodes + hi)
    lo, hi = keys // num_nodes, keys % num_nodes
    return torch.stack([torch.cat([lo, hi]), torch.cat([hi, lo])])


def read_edge_list(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (m, 2) int64 and their 1-based line numbers (m,) from a text edge list.

    One edge per line, ``u,v`` or ``u v`` (commas, tabs or spaces); blank lines and lines starting
    with ``#`` are skipped, and so is a first line of column names (no field is a number).
    """
    pairs, lines = [], []
    for number, line in enumerate(text_lines(path), start=1):
        fields = line.replace(",", " ").split()
        if not fields or fields[0].startswith("#"):
            continue
        if not pairs and number == 1 and not any(_is_number(f) for f in fields):
            continue  # a header such as "source,target"
        try:
            if len(fields) != 2:
                raise ValueError
            pairs.append((int(fields[0]), int(fields[1])))
        except ValueError:
            raise DataError(
                f"{path}: line {number}: expected two integer node ids 'u,v', got {line.strip()!r}"
            ) from None
        lines.append(number)
    return np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(lines, dtype=np.int64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    raise DataError(
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


def _labels_array(labels: np.ndarray, source: str) -> np.ndarray:
    # (n,) int64 labels; integer-valued floats are accepted, anything else names its row.
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{source}: labels must be a 1-D array (one per node), got shape {labels.shape}")
    if labels.dtype.kind not in "iub":
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            i = int(np.flatnonzero(~whole)[0])
            raise DataError(f"{source}: row {i}: label {labels[i].item()!r} is not an integer")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        i = int(np.argmin(labels))
        raise DataError(f"{source}: row {i}: label {labels[i]} is negative (classes are 0, 1, ...)")
    return labels


def _check_split(split: tuple, num_nodes: int, sources: tuple[str, str, str]) -> tuple[torch.Tensor, ...]:
    # Node ids of each part in range, without repeats, the parts disjoint.
    parts = []
    for ids, source in zip(split, sources):
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise DataError(f"{source}: expected a 1-D array of integer node ids, got {ids.dtype} {ids.shape}")
        check_node_ids(ids, num_nodes, source)
        parts.append(ids.astype(np.int64))
    ids = np.concatenate(parts)
    part = np.concatenate([np.full(len(x), k) for k, x in enumerate(parts)])
    row = np.concatenate([np.arange(len(x)) for x in parts])
    order = np.argsort(ids, kind="stable")  # a repeat sorts right after its first occurrence
    repeats = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if repeats.size:
        first, again = order[repeats[0]], order[repeats[0] + 1]
        raise DataError(
            f"{sources[part[again]]}: row {row[again]}: node {ids[again]} is already in "
            f"{sources[part[first]]} (row {row[first]})"
        )
    return tuple(torch.as_tensor(x) for x in parts)


def make_graph(
    name: str,
    features: np.ndarray,
    pairs: np.ndarray,
    labels: np.ndarray | None,
    split: tuple,
    sources: dict[str, str],
    edge_lines: np.ndarray | None = None,
) -> Graph:
    """A checked ``Graph``: features (n, f) finite with n > 0; pairs (m, 2) ids in [0, n);
    labels (n,) integers >= 0, or None (no classes: link prediction only); split = (train, val,
    test) node ids, disjoint. ``sources`` names where "features", "edges", "labels" and the
    "train"/"val"/"test" ids came from; ``edge_lines`` (m,) the text-file line of each pair.
    Each problem raises DataError naming the source and the row."""
    features = np.asarray(features)
    where = sources["features"]
    if features.ndim != 2:
        raise DataError(f"{where}: features must be a 2-D array (nodes, features), got shape {features.shape}")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise DataError(f"{where}: no nodes or no features (shape {features.shape})")
    if features.dtype.kind not in "iufb":
        raise DataError(f"{where}: features must be numbers, got dtype {features.dtype}")
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        raise DataError(f"{where}: row {int(np.flatnonzero(~finite)[0])}: a feature is NaN or infinite")
    n = features.shape[0]
    if labels is None:
        labels_t, num_classes = torch.zeros(n, dtype=torch.int64), 0
    else:
        labels = _labels_array(labels, sources["labels"])
        if labels.shape[0] != n:
            raise DataError(f"{sources['labels']}: {labels.shape[0]} labels for {n} nodes (rows of {where})")
        labels_t, num_classes = torch.as_tensor(labels), int(labels.max()) + 1
    edge_index = undirected_edge_index(pairs, n, sources["edges"], edge_lines)
    split_sources = tuple(sources.get(part, f"{name} {part} split") for part in ("train", "val", "test"))
    train, val, test = _check_split(split, n, split_sources)
    return Graph(name, torch.as_tensor(features, dtype=torch.float32), edge_index, labels_t, num_classes,
                 train, val, test)


def row_normalize(features: np.ndarray) -> np.ndarray:
    """Scale each row (n, f) to sum 1 (rows of zeros stay zero), the usual bag-of-words practice."""
    return features / np.maximum(features.sum(1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------------------------
# HGCN datasets and the generated tree


def _npz_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz archive ({type(err).__name__})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not a .npz archive of {list(keys)}")
    with data:
        for key in keys:
            if key not in data.files:
                raise DataError(f"{path}: missing array {key!r} (has {data.files})")
        try:
            return {key: data[key] for key in keys}
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{path}: a damaged array in the archive ({type(err).__name__})") from None


def load_airport(data_dir: str | os.PathLike = "", split_seed: int = 0) -> Graph:
    """Airport (HGCN): features = columns 0-3 of ``feats``; label = column 4 binned at
    [7/7, 8/7, 9/7] (4 classes, shifted to start at 0); 70/15/15 random node split."""
    path = require_file(resolve_data_dir(data_dir) / "hgcn" / "airport" / "airport.npz")
    arrays = _npz_arrays(path, ("edges", "feats"))
    edges, feats = arrays["edges"], arrays["feats"]
    if feats.ndim != 2 or feats.shape[1] < 5:
        raise DataError(f"{path}: 'feats' must be (n, 5), got {feats.shape}")
    if feats.shape[0] == 0:
        raise DataError(f"{path}: 'feats' has no rows (zero nodes)")
    labels = np.digitize(feats[:, 4], AIRPORT_LABEL_BINS)
    labels = labels - labels.min()
    split = random_node_split(feats.shape[0], split_seed)
    sources = {"features": f"{path} 'feats'", "edges": f"{path} 'edges'", "labels": f"{path} 'feats' column 4"}
    return make_graph("airport", feats[:, :4], edges, labels, split, sources)


def _load_csr_npz(path: Path) -> np.ndarray:
    # A scipy.sparse.save_npz CSR file read with numpy alone, so scipy stays optional.
    arrays = _npz_arrays(path, ("format", "indptr", "indices", "data", "shape"))
    if arrays["format"].item() not in (b"csr", "csr"):
        raise DataError(f"{path}: expected a scipy CSR matrix saved with save_npz, got {arrays['format']}")
    indptr, indices, values = arrays["indptr"], arrays["indices"], arrays["data"]
    shape = tuple(int(s) for s in arrays["shape"])
    if len(shape) != 2 or len(indptr) != shape[0] + 1 or indptr[-1] != len(indices) or len(indices) != len(values):
        raise DataError(
            f"{path}: inconsistent CSR arrays (shape {shape}, {len(indptr)} indptr, {len(indices)} indices, "
            f"{len(values)} values)"
        )
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    bad = (indices < 0) | (indices >= shape[1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: row {rows[i]}: column {indices[i]} is outside [0, {shape[1]})")
    dense = np.zeros(shape, dtype=np.float32)
    dense[rows, indices] = values
    return dense


def load_disease_lp(data_dir: str | os.PathLike = "", split_seed: int = 0) -> Graph:
    """Disease-LP (HGCN): a tree of 2665 nodes, 11 features, binary SIR labels; 70/15/15 node split."""
    root = resolve_data_dir(data_dir) / "hgcn" / "disease_lp"
    edges_path = require_file(root / "disease_lp.edges.csv")
    feats_path, labels_path = require_file(root / "disease_lp.feats.npz"), require_file(root / "disease_lp.labels.npy")
    feats = _load_csr_npz(feats_path)
    labels = load_npy(labels_path)
    pairs, lines = read_edge_list(edges_path)
    split = random_node_split(feats.shape[0], split_seed)
    sources = {"features": str(feats_path), "edges": str(edges_path), "labels": str(labels_path)}
    return make_graph("disease_lp", feats, pairs, labels, split, sources, lines)


def make_disease_tree(num_nodes: int = 1000, num_features: int = 8, seed: int = 0) -> Graph:
    """A Disease-like graph generated in code: a random tree with an SIR outbreak on it.

    Tree: node i > 0 attaches to a uniformly random earlier node. Each node has a susceptibility
    s_i ~ U(0, 1); the outbreak starts at 5% of the nodes and crosses each tree edge to an
    uninfected neighbour j with probability sqrt(s_j) (about 40% end infected). Label = ever infected (2 classes). Features:
    a noisy s_i (informative but not decisive) and a Brownian "position" that drifts along tree
    edges (so neighbours have similar features, as in the HGCN data). Split 70/15/15 by ``seed``.
    """
    if num_nodes < 10:
        raise ConfigError(f"make_disease_tree: num_nodes must be >= 10, got {num_nodes}")
    if num_features < 2:
        raise ConfigError(f"make_disease_tree: num_features must be >= 2, got {num_features}")
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
    sources = {"features": "disease_tree features", "edges": "disease_tree edges", "labels": "disease_tree labels"}
    return make_graph("disease_tree", features, pairs, infected.astype(np.int64), split, sources)
