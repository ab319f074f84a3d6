"""Graph loaders (real data when present), the generated tree, edge splits and error paths."""

import numpy as np
import pytest
import torch

from sst.config import ConfigError
from sst.data.graph_datasets import load_graph
from sst.data.graphs import (
    load_airport,
    load_disease_lp,
    make_disease_tree,
    resolve_data_dir,
    sample_negative_edges,
    split_edges,
    undirected_edge_index,
    unique_pairs,
)
from sst.data.planetoid import load_planetoid
from sst.errors import DataError, MissingDataError

DATA = resolve_data_dir()


def need(sub):
    if not (DATA / sub).exists():
        pytest.skip(f"shared data {DATA / sub} not present")


def check_graph(g):
    n = g.num_nodes
    ei = g.edge_index
    assert ei.dtype == torch.int64 and ei.min() >= 0 and ei.max() < n
    assert (ei[0] != ei[1]).all()
    keys = set((ei[0] * n + ei[1]).tolist())
    assert len(keys) == ei.shape[1]  # no duplicates
    assert keys == set((ei[1] * n + ei[0]).tolist())  # symmetric
    split = torch.cat([g.train_idx, g.val_idx, g.test_idx])
    assert split.unique().numel() == split.numel()  # disjoint
    assert g.labels.shape == (n,) and g.labels.max() == g.num_classes - 1


def test_cora_sizes_and_standard_split():
    need("planetoid/Cora/raw")
    pytest.importorskip("torch_geometric")
    g = load_graph("cora", DATA)
    check_graph(g)
    assert g.features.shape == (2708, 1433) and g.num_classes == 7
    assert (len(g.train_idx), len(g.val_idx), len(g.test_idx)) == (140, 500, 1000)
    assert g.num_edges == 5278
    assert torch.allclose(g.features.sum(1)[g.features.sum(1) > 0], torch.tensor(1.0))


def test_cora_matches_torch_geometric_reader():
    need("planetoid/Cora/raw")
    io = pytest.importorskip("torch_geometric.io")
    ref = io.read_planetoid_data(str(DATA / "planetoid/Cora/raw"), "cora")
    g = load_planetoid("cora", DATA, normalize_features=False)
    assert torch.equal(g.labels, ref.y)
    assert torch.equal(g.features, ref.x)
    assert torch.equal(g.test_idx, ref.test_mask.nonzero().squeeze(1))
    assert torch.equal(g.val_idx, ref.val_mask.nonzero().squeeze(1))
    ours = set((g.edge_index[0] * 2708 + g.edge_index[1]).tolist())
    theirs = set((ref.edge_index[0] * 2708 + ref.edge_index[1]).tolist())
    assert ours == theirs


def test_airport_sizes_labels_and_seeded_split():
    need("hgcn/airport/airport.npz")
    g = load_airport(DATA, split_seed=3)
    check_graph(g)
    assert g.num_nodes == 3188 and g.features.shape == (3188, 4) and g.num_classes == 4
    assert (len(g.train_idx), len(g.val_idx), len(g.test_idx)) == (2232, 478, 478)
    raw = np.load(DATA / "hgcn/airport/airport.npz")["feats"]
    assert torch.equal(g.labels, torch.as_tensor(np.digitize(raw[:, 4], [1, 8 / 7, 9 / 7])).long())
    assert torch.equal(load_airport(DATA, split_seed=3).val_idx, g.val_idx)
    assert not torch.equal(load_airport(DATA, split_seed=4).val_idx, g.val_idx)


def test_disease_lp_sizes():
    need("hgcn/disease_lp")
    g = load_disease_lp(DATA)
    check_graph(g)
    assert g.features.shape == (2665, 11) and g.num_classes == 2
    assert g.num_edges == 2664  # a tree
    assert g.features.abs().sum() > 0


def test_generated_tree_is_a_connected_tree_and_seeded():
    g = make_disease_tree(200, num_features=6, seed=1)
    check_graph(g)
    assert g.num_edges == 199 and g.features.shape == (200, 6) and g.num_classes == 2
    assert 0.15 < g.labels.float().mean() < 0.85
    reached, frontier = {0}, [0]
    adj = {i: [] for i in range(200)}
    for u, v in g.edge_index.T.tolist():
        adj[u].append(v)
    while frontier:
        frontier = [v for u in frontier for v in adj[u] if v not in reached and not reached.add(v)]
    assert len(reached) == 200
    assert torch.equal(make_disease_tree(200, 6, seed=1).features, g.features)
    assert not torch.equal(make_disease_tree(200, 6, seed=2).labels, g.labels)


def test_link_split_sizes_and_disjointness():
    g = make_disease_tree(400, seed=0)
    s = split_edges(g, seed=5)
    m = g.num_edges
    assert s.val_pos.shape[1] == int(0.05 * m) and s.test_pos.shape[1] == int(0.10 * m)
    assert s.train_pos.shape[1] == m - s.val_pos.shape[1] - s.test_pos.shape[1]
    assert s.val_neg.shape == s.val_pos.shape and s.test_neg.shape == s.test_pos.shape
    n = g.num_nodes
    key = lambda p: set((p[0] * n + p[1]).tolist())  # noqa: E731
    edges = key(unique_pairs(g.edge_index))
    pos = [key(s.train_pos), key(s.val_pos), key(s.test_pos)]
    assert set.union(*pos) == edges and sum(map(len, pos)) == len(edges)
    neg_val, neg_test = key(s.val_neg), key(s.test_neg)
    assert not (neg_val | neg_test) & edges and not neg_val & neg_test
    assert len(neg_val) == s.val_neg.shape[1]
    assert (s.val_neg[0] < s.val_neg[1]).all()
    # message passing sees only training edges
    assert key(unique_pairs(s.train_edge_index)) == pos[0]
    assert torch.equal(split_edges(g, seed=5).test_neg, s.test_neg)


def test_negative_sampling_avoids_forbidden_and_errors_when_dense():
    forbidden = torch.tensor([[0, 0, 1], [1, 2, 2]])
    gen = torch.Generator().manual_seed(0)
    neg = sample_negative_edges(4, 3, forbidden, gen)  # non-edges of a triangle + isolated node 3
    assert set((neg[0] * 4 + neg[1]).tolist()) == {3, 7, 11}
    with pytest.raises(DataError, match="too dense"):
        sample_negative_edges(3, 1, forbidden, gen, max_rounds=5)


def test_error_paths(tmp_path):
    with pytest.raises(MissingDataError, match="airport.npz"):
        load_airport(tmp_path)
    with pytest.raises(ConfigError, match=r"dataset: 'wikics' is not one of \['cora', 'citeseer', 'pubmed'"):
        load_graph("wikics", tmp_path)
    (tmp_path / "hgcn/airport").mkdir(parents=True)
    bad = tmp_path / "hgcn/airport/airport.npz"
    np.savez(bad, edges=np.array([[0, 1], [1, 9]]), feats=np.ones((3, 5), np.float32))
    with pytest.raises(DataError, match=r"airport.npz 'edges': row 1: node id 9 is outside \[0, 3\)"):
        load_airport(tmp_path)
    np.savez(bad, edges=np.array([[0, 1]]), feats=np.ones((3, 4), np.float32))
    with pytest.raises(DataError, match=r"airport.npz: 'feats' must be \(n, 5\), got \(3, 4\)"):
        load_airport(tmp_path)
    np.savez(bad, feats=np.ones((3, 5), np.float32))
    with pytest.raises(DataError, match="airport.npz: missing array 'edges'"):
        load_airport(tmp_path)
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match=r"airport.npz: not a readable .npz archive"):
        load_airport(tmp_path)
    with pytest.raises(DataError, match="edges: row 0: node id -1 is outside"):
        undirected_edge_index(np.array([[-1, 0]]), 3)
    with pytest.raises(DataError, match=r"e: row 1: node ids \[1.5, 2.0\] are not integers"):
        undirected_edge_index(np.array([[0.0, 1.0], [1.5, 2.0]]), 3, "e")
    with pytest.raises(DataError, match=r"shape \(m, 2\), got \(2, 3\)"):
        undirected_edge_index(np.zeros((2, 3), np.int64), 3)
    root = tmp_path / "hgcn/disease_lp"
    root.mkdir(parents=True)
    (root / "disease_lp.edges.csv").write_text("0,1\n1,2\n")
    csr = dict(indptr=np.array([0, 1, 1, 2]), indices=np.array([0, 1]), data=np.array([1.0, 2.0]),
               shape=np.array([3, 2]), format=np.array(b"csr"))
    np.savez(root / "disease_lp.feats.npz", **csr)
    np.save(root / "disease_lp.labels.npy", np.array([0, 1]))
    with pytest.raises(DataError, match=r"disease_lp.labels.npy: 2 labels for 3 nodes \(rows of .*feats.npz"):
        load_disease_lp(tmp_path)
    np.save(root / "disease_lp.labels.npy", np.array([0, 1, 1]))
    g = load_disease_lp(tmp_path)
    assert torch.equal(g.features, torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]))
    (root / "disease_lp.edges.csv").write_text("0,1\n0;1\n")
    with pytest.raises(DataError, match=r"disease_lp.edges.csv: line 2: expected two integer node ids"):
        load_disease_lp(tmp_path)
    (root / "disease_lp.edges.csv").write_text("0,1\n\n2,3\n")
    with pytest.raises(DataError, match=r"disease_lp.edges.csv: line 3: node id 3 is outside \[0, 3\)"):
        load_disease_lp(tmp_path)
    np.savez(root / "disease_lp.feats.npz", **{k: v for k, v in csr.items() if k != "indices"})
    with pytest.raises(DataError, match="disease_lp.feats.npz: missing array 'indices'"):
        load_disease_lp(tmp_path)
    np.savez(root / "disease_lp.feats.npz", **{**csr, "indices": np.array([0, 5])})
    with pytest.raises(DataError, match=r"feats.npz: row 2: column 5 is outside \[0, 2\)"):
        load_disease_lp(tmp_path)
    np.savez(root / "disease_lp.feats.npz", **csr)
    (root / "disease_lp.labels.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"disease_lp.labels.npy: not a readable .npy array"):
        load_disease_lp(tmp_path)
