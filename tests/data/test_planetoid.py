"""Planetoid loading on tiny datasets built here in the raw format, CiteSeer's test-id gaps included."""

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sst.data.graph_datasets import load_graph
from sst.errors import DataError, DependencyError, MissingDataError
from sst.data.planetoid import PLANETOID, load_planetoid

pytest.importorskip("torch_geometric")
sparse = pytest.importorskip("scipy.sparse")

N_TRAIN, N_VAL, N_UNLABELLED, F, C = 6, 500, 4, 5, 3


def write_planetoid(root, name, test_span=9, gaps=(2, 6), seed=0):
    """Raw Planetoid files of a tiny graph under root/planetoid/<Name>/raw; returns the truth.

    allx covers the training, validation and unlabelled nodes (ids 0 .. A-1); the test ids are
    A .. A+test_span-1 without ``gaps`` (isolated nodes that have no row, as in CiteSeer), listed in
    test.index in a shuffled order that tx and ty follow row by row.
    """
    rng = np.random.default_rng(seed)
    n_all = N_TRAIN + N_VAL + N_UNLABELLED
    test_ids = np.array([n_all + i for i in range(test_span) if i not in gaps])
    rng.shuffle(test_ids)
    n = n_all + test_span
    features = rng.integers(0, 3, (n, F)).astype(np.float32)
    labels = rng.integers(0, C, n)
    missing = [n_all + g for g in gaps]
    features[missing], labels[missing] = 0.0, 0
    onehot = np.eye(C, dtype=np.int64)[labels]
    graph = {i: [] for i in range(n)}
    for u, v in rng.integers(0, n, (3 * n, 2)):
        if u not in missing and v not in missing:
            graph[int(u)].append(int(v))
    parts = {
        "x": sparse.csr_matrix(features[:N_TRAIN]), "y": onehot[:N_TRAIN],
        "allx": sparse.csr_matrix(features[:n_all]), "ally": onehot[:n_all],
        "tx": sparse.csr_matrix(features[test_ids]), "ty": onehot[test_ids], "graph": graph,
    }
    raw = root / "planetoid" / PLANETOID[name] / "raw"
    raw.mkdir(parents=True)
    for part, value in parts.items():
        with open(raw / f"ind.{name}.{part}", "wb") as handle:
            pickle.dump(value, handle, protocol=2)
    (raw / f"ind.{name}.test.index").write_text("".join(f"{i}\n" for i in test_ids))
    edges = {(u, v) for u, nbrs in graph.items() for v in nbrs if u != v}
    edges |= {(v, u) for u, v in edges}
    return {"raw": raw, "features": features, "labels": labels, "test_ids": test_ids, "edges": edges,
            "missing": missing, "n": n}


@pytest.mark.parametrize("name", ["citeseer", "pubmed"])
def test_planetoid_with_isolated_test_nodes_and_without(tmp_path, name):
    # CiteSeer's test ids have gaps; PubMed's (like Cora's) are contiguous.
    truth = write_planetoid(tmp_path, name, gaps=(2, 6) if name == "citeseer" else ())
    g = load_planetoid(name, tmp_path, normalize_features=False, cache_dir=tmp_path / "cache")
    n = truth["n"]
    assert g.name == name and g.num_nodes == n and g.num_classes == C
    assert torch.equal(g.features, torch.as_tensor(truth["features"]))  # tx rows at their test ids
    assert torch.equal(g.labels, torch.as_tensor(truth["labels"]))
    assert torch.equal(g.train_idx, torch.arange(N_TRAIN))
    assert torch.equal(g.val_idx, torch.arange(N_TRAIN, N_TRAIN + N_VAL))
    assert torch.equal(g.test_idx, torch.as_tensor(np.sort(truth["test_ids"])))
    in_split = set(torch.cat([g.train_idx, g.val_idx, g.test_idx]).tolist())
    assert not in_split & set(truth["missing"])  # isolated gap nodes belong to no split
    assert set(zip(*g.edge_index.tolist())) == truth["edges"]
    normalized = load_graph(name, tmp_path).features
    sums = normalized.sum(1)
    assert torch.allclose(sums[sums > 0], torch.tensor(1.0))
    assert (sums[truth["missing"]] == 0).all()


def test_gaps_in_a_dataset_read_without_citeseer_handling_are_a_clear_error(tmp_path):
    truth = write_planetoid(tmp_path, "cora", gaps=(3,))
    with pytest.raises(DataError, match=r"Cora/raw/ind.cora.\{x,tx,allx,y,ty,ally,graph\}: torch_geometric "
                                             r"could not read them: IndexError"):
        load_planetoid("cora", tmp_path)
    assert truth["raw"].is_dir()


def test_planetoid_file_errors_name_the_file_and_line(tmp_path):
    truth = write_planetoid(tmp_path, "citeseer")
    index = truth["raw"] / "ind.citeseer.test.index"
    good = index.read_text()
    index.write_text("517\n5x8\n")
    with pytest.raises(DataError, match=r"ind.citeseer.test.index: line 2: '5x8' is not an integer node id"):
        load_planetoid("citeseer", tmp_path)
    index.write_text("517\n-3\n")
    with pytest.raises(DataError, match=r"test.index: line 2: node id -3 is negative"):
        load_planetoid("citeseer", tmp_path)
    index.write_text("517\n518\n517\n")
    with pytest.raises(DataError, match=r"test.index: line 3: node id 517 appears twice"):
        load_planetoid("citeseer", tmp_path)
    index.write_text(good)
    (truth["raw"] / "ind.citeseer.tx").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"ind.citeseer.\{x,tx,.*could not read them: UnpicklingError"):
        load_planetoid("citeseer", tmp_path)
    (truth["raw"] / "ind.citeseer.ty").unlink()
    with pytest.raises(MissingDataError, match=r"CiteSeer/raw lacks \['ind.citeseer.ty'\].*task.download=true"):
        load_planetoid("citeseer", tmp_path, cache_dir=tmp_path / "cache")


def test_download_fetches_missing_files_into_the_cache(tmp_path, monkeypatch):
    import torch_geometric.data

    source = write_planetoid(tmp_path / "remote", "pubmed", gaps=())["raw"]
    fetched = []

    def fake_download(url, folder, log=True):  # stands in for the internet
        fetched.append(url)
        target = Path(folder) / url.rsplit("/", 1)[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((source / target.name).read_bytes())
        return str(target)

    monkeypatch.setattr(torch_geometric.data, "download_url", fake_download)
    with pytest.raises(MissingDataError, match="lacks"):
        load_planetoid("pubmed", tmp_path / "local", cache_dir=tmp_path / "cache")
    g = load_planetoid("pubmed", tmp_path / "local", download=True, cache_dir=tmp_path / "cache")
    assert len(fetched) == 8 and fetched[0].startswith("https://") and fetched[0].endswith("ind.pubmed.x")
    assert g.num_nodes == N_TRAIN + N_VAL + N_UNLABELLED + 9
    # a second load finds the cached copy and fetches nothing
    assert load_planetoid("pubmed", tmp_path / "local", cache_dir=tmp_path / "cache").num_nodes == g.num_nodes
    assert len(fetched) == 8


def test_missing_torch_geometric_names_the_extra(tmp_path, monkeypatch):
    write_planetoid(tmp_path, "citeseer")
    monkeypatch.setitem(sys.modules, "torch_geometric.io", None)  # makes the import fail
    with pytest.raises(DependencyError, match=r"torch_geometric, which is not installed.*\[graph\]"):
        load_planetoid("citeseer", tmp_path)
