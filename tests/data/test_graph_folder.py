"""A user's graph folder: the documented format loads, and each malformed file names file and row."""

import numpy as np
import pytest
import torch

from sst.config import ConfigError
from sst.data.graph_datasets import load_graph
from sst.data.graph_folder import load_graph_folder
from sst.errors import DataError, MissingDataError

FEATURES = [[1.0, 0.0, 2.0], [0.5, 0.5, 0.0], [0.0, 1.0, 1.0], [3.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 4.0]]
LABELS = [0, 1, 1, 0, 2, 2]


def write_folder(folder, npy=False):
    folder.mkdir()
    (folder / "edges.csv").write_text("source,target\n# a comment\n0,1\n1,2\n\n2,3\n3,4\n4,5\n5,0\n1,0\n")
    if npy:
        np.save(folder / "features.npy", np.array(FEATURES, dtype=np.float32))
        np.save(folder / "labels.npy", np.array(LABELS))
    else:
        (folder / "features.csv").write_text("".join(",".join(map(str, row)) + "\n" for row in FEATURES))
        (folder / "labels.csv").write_text("".join(f"{y}\n" for y in LABELS))
    return folder


def test_csv_folder_loads_with_a_seeded_random_split(tmp_path):
    g = load_graph(f"path:{write_folder(tmp_path / 'mine')}", split_seed=2)
    assert g.name == "mine" and g.num_nodes == 6 and g.num_classes == 3
    assert torch.equal(g.features, torch.tensor(FEATURES))
    assert torch.equal(g.labels, torch.tensor(LABELS))
    assert g.num_edges == 6  # the ring; "1,0" repeats "0,1"
    split = torch.cat([g.train_idx, g.val_idx, g.test_idx])
    assert sorted(split.tolist()) == list(range(6))
    assert torch.equal(load_graph(f"path:{tmp_path / 'mine'}", split_seed=2).val_idx, g.val_idx)


def test_npy_folder_with_split_files_and_txt_edges_without_labels(tmp_path):
    folder = write_folder(tmp_path / "g", npy=True)
    for part, ids in (("train", [0, 1, 2]), ("val", [3]), ("test", [4, 5])):
        np.save(folder / f"{part}.npy", np.array(ids))
    g = load_graph_folder(folder)
    assert g.train_idx.tolist() == [0, 1, 2] and g.val_idx.tolist() == [3] and g.test_idx.tolist() == [4, 5]
    (folder / "edges.csv").unlink()
    (folder / "edges.txt").write_text("0 1\n1\t2\n")
    (folder / "labels.npy").unlink()
    g = load_graph_folder(folder)
    assert g.num_edges == 2 and g.num_classes == 0  # unlabelled: for link prediction only


def _edit(name, text):
    def edit(folder):
        (folder / name).write_text(text)
    return edit


def _npy(name, array):
    def edit(folder):
        for suffix in (".csv", ".npy"):
            (folder / f"{name}{suffix}").unlink(missing_ok=True)
        np.save(folder / f"{name}.npy", np.asarray(array))
    return edit


def _binary(name):
    def edit(folder):
        (folder / name).write_bytes(bytes(range(256)))
    return edit


def _remove(*names):
    def edit(folder):
        for name in names:
            (folder / name).unlink()
    return edit


def _splits(**parts):
    def edit(folder):
        for part, ids in parts.items():
            np.save(folder / f"{part}.npy", np.array(ids))
    return edit


CASES = {
    "edge id beyond the nodes": (_edit("edges.csv", "0,1\n1,2\n2,9\n"),
                                 r"edges.csv: line 3: node id 9 is outside \[0, 6\) \(the graph has 6 nodes\)"),
    "negative edge id": (_edit("edges.csv", "0,1\n-1,2\n"), r"edges.csv: line 2: node id -1 is outside \[0, 6\)"),
    "non-integer edge row": (_edit("edges.csv", "0,1\n1,2.5\n"),
                             r"edges.csv: line 2: expected two integer node ids 'u,v', got '1,2.5'"),
    "three ids on an edge row": (_edit("edges.csv", "0,1\n1,2,3\n"), r"edges.csv: line 2: expected two integer"),
    "feature row of another width": (_edit("features.csv", "1,2,3\n4,5,6\n7,8\n"),
                                     r"features.csv: line 3: 2 values, but line 1 has 3"),
    "non-numeric feature": (_edit("features.csv", "1,2,3\n4,x,6\n"),
                            r"features.csv: line 2: expected comma-separated numbers, got '4,x,6'"),
    "NaN feature": (_npy("features", [[1.0], [2.0], [np.nan], [1.0], [1.0], [1.0]]),
                    r"features.npy: row 2: a feature is NaN or infinite"),
    "1-D features": (_npy("features", np.ones(6)), r"features.npy: features must be a 2-D array .* got shape \(6,\)"),
    "zero nodes (npy)": (_npy("features", np.zeros((0, 3))), r"features.npy: no nodes or no features"),
    "zero nodes (csv)": (_edit("features.csv", "# nothing\n"), r"features.csv: no rows"),
    "labels count": (_edit("labels.csv", "0\n1\n1\n0\n2\n"),
                     r"labels.csv: 5 labels for 6 nodes \(rows of .*features.csv\)"),
    "negative label": (_npy("labels", [0, 1, 1, -2, 2, 2]), r"labels.npy: row 3: label -2 is negative"),
    "fractional label": (_npy("labels", [0, 1, 1.5, 0, 2, 2]), r"labels.npy: row 2: label 1.5 is not an integer"),
    "non-integer label row": (_edit("labels.csv", "0\nzero\n"),
                              r"labels.csv: line 2: expected comma-separated integers, got 'zero'"),
    "missing features": (_remove("features.csv"), r"missing features.npy or features.csv"),
    "missing edges": (_remove("edges.csv"), r"missing edges.csv or edges.txt"),
    "two feature files": (_splits(features=[[1.0]]), r"both features.npy and features.csv exist; keep one"),
    "some split files only": (_splits(train=[0, 1]), r"has \['train.npy'\] but not \['val.npy', 'test.npy'\]"),
    "overlapping splits": (_splits(train=[0, 1, 2], val=[3, 1], test=[4, 5]),
                           r"val.npy: row 1: node 1 is already in .*train.npy \(row 1\)"),
    "split id beyond the nodes": (_splits(train=[0, 1], val=[2], test=[3, 7]),
                                  r"test.npy: row 1: node id 7 is outside \[0, 6\)"),
    "split of floats": (_splits(train=[0.0, 1.0], val=[2], test=[3]),
                        r"train.npy: expected a 1-D array of integer node ids, got float64"),
    "corrupt npy": (_edit("labels.npy", "garbage"), r"labels.npy: not a readable .npy array"),
    "binary edge list": (_binary("edges.csv"), r"edges.csv: not a UTF-8 text file \(byte 128"),
    "binary feature table": (_binary("features.csv"), r"features.csv: not a UTF-8 text file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_folder_names_the_file_and_row(tmp_path, case):
    edit, message = CASES[case]
    folder = write_folder(tmp_path / "g")
    if case == "corrupt npy":
        (folder / "labels.csv").unlink()
    edit(folder)
    error = MissingDataError if case.startswith("missing") else DataError
    with pytest.raises(error, match=message) as info:
        load_graph_folder(folder)
    assert "\n" not in str(info.value)


def test_dataset_names_are_checked_as_config_values(tmp_path):
    from sst.tasks.graph import LinkPredictionConfig, LinkPredictionTask, NodeClassificationConfig, NodeClassificationTask

    with pytest.raises(ConfigError, match=r"task.dataset: 'cora2' is not one of .* or path:<folder>"):
        NodeClassificationConfig(dataset="cora2")
    with pytest.raises(ConfigError, match="task.dataset"):
        LinkPredictionConfig(dataset="path:  ")
    with pytest.raises(MissingDataError, match="graph folder .*absent does not exist"):
        load_graph(f"path:{tmp_path / 'absent'}")
    folder = write_folder(tmp_path / "g", npy=True)
    (folder / "labels.npy").unlink()
    task = NodeClassificationTask(NodeClassificationConfig(dataset=f"path:{folder}"), 0, tmp_path)
    with pytest.raises(DataError, match="node classification needs labels"):
        task.build_model()
    lp = LinkPredictionTask(LinkPredictionConfig(dataset=f"path:{folder}", val_fraction=0.2, test_fraction=0.2), 0,
                            tmp_path)
    assert lp.build_model() is not None and lp.describe()["edge_split"] == [4, 1, 1]
