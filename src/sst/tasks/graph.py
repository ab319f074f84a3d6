"""Graph tasks with a HyboNet GCN: node classification and link prediction (full-batch).

Node classification: cross entropy on the training nodes; metric micro F1 (= accuracy for one
label per node), also macro F1. Link prediction: binary cross entropy of the Fermi-Dirac decoder
on training edges against as many negatives re-sampled every step; metrics ROC-AUC and average
precision on held-out edges and sampled non-edges (HGCN's 85/5/10 split).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sst.schema import ConfigError, check_range
from sst.data.graph_datasets import check_dataset_name, load_graph
from sst.data.graphs import Graph, LinkSplit, sample_negative_edges, split_edges
from sst.errors import DataError, UsageError
from sst.models.hyperbolic_gcn import HyboNetGCN
from sst.models.modes import eval_mode
from sst.tasks.base import Task, TaskConfig

# --------------------------------------------------------------------------------------------
# Metrics


def f1_scores(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> tuple[float, float]:
    """(micro F1, macro F1) of integer predictions (n,) against labels (n,).

    Macro F1 averages 2TP / (2TP + FP + FN) over the classes present in target or pred.
    """
    pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
    if pred.numel() == 0:
        return 0.0, 0.0
    tp = torch.bincount(target[pred == target], minlength=num_classes).double()
    n_pred = torch.bincount(pred, minlength=num_classes).double()
    n_true = torch.bincount(target, minlength=num_classes).double()
    present = (n_pred + n_true) > 0
    per_class = 2 * tp[present] / (n_pred + n_true)[present]
    return float(tp.sum() / pred.numel()), float(per_class.mean())


def _tie_groups(scores: torch.Tensor, labels: torch.Tensor):
    # Group equal scores: (group sizes, positives per group), groups in ascending score order.
    values, inverse, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    positives = torch.zeros(values.numel(), dtype=torch.float64).index_add_(0, inverse, labels.double())
    return inverse, counts.double(), positives


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties count 1/2.

    scores, labels: (n,), labels in {0, 1}. Computed from average ranks (Mann-Whitney U).
    """
    scores, labels = scores.reshape(-1).cpu(), labels.reshape(-1).cpu()
    n_pos = float(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc: needs at least one positive and one negative label")
    inverse, counts, _ = _tie_groups(scores, labels)
    ends = counts.cumsum(0)
    avg_rank = ends - (counts - 1) / 2  # 1-based mean rank of each tie group
    rank_sum = float((avg_rank[inverse] * labels.double()).sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision: sum over score thresholds (descending) of precision x recall increment.

    scores, labels: (n,); tied scores form one threshold (as in scikit-learn).
    """
    scores, labels = scores.reshape(-1).cpu(), labels.reshape(-1).cpu()
    n_pos = float(labels.sum())
    if n_pos == 0:
        raise ValueError("average_precision: needs at least one positive label")
    _, counts, positives = _tie_groups(scores, labels)
    counts, positives = counts.flip(0), positives.flip(0)  # highest scores first
    precision = positives.cumsum(0) / counts.cumsum(0)
    return float((precision * positives).sum() / n_pos)


# --------------------------------------------------------------------------------------------
# Configs


@dataclass
class GraphTaskConfig(TaskConfig):
    """Shared settings of the graph tasks (a HyboNet GCN on one graph, full batch)."""

    dataset: str = "cora"  # cora, citeseer, pubmed, airport, disease_lp, disease_tree or path:<folder>
    data_dir: str = ""  # "": $SST_DATA_DIR or ../shared/data
    download: bool = False  # fetch a missing Planetoid dataset into the cache (needs internet)
    hidden: int = 16  # manifold dimension of the hidden layers
    n_layers: int = 2
    dropout: float = 0.0
    curvature: float = 1.0  # K: the hyperboloid -x0^2 + |x|^2 = -K (curvature -1/K)
    use_bias: bool = True
    split_seed: int = 1234  # node/edge split and generated graph, independent of the run seed
    tree_nodes: int = 1000  # size of the generated disease_tree graph

    def __post_init__(self) -> None:
        check_dataset_name(self.dataset)
        for key in ("hidden", "n_layers"):
            check_range(f"task.{key}", getattr(self, key), low=1)
        check_range("task.dropout", self.dropout, low=0, high=1, high_inclusive=False)
        check_range("task.curvature", self.curvature, low=0, low_inclusive=False, note="K; curvature is -1/K")
        check_range("task.tree_nodes", self.tree_nodes, low=10)


@dataclass
class NodeClassificationConfig(GraphTaskConfig):
    """Node classification (Planetoid: standard split; folders: their split files; else 70/15/15)."""

    name: str = "node_classification"


@dataclass
class LinkPredictionConfig(GraphTaskConfig):
    """Link prediction with a Fermi-Dirac decoder p = 1 / (exp((d^2 - r) / t) + 1)."""

    name: str = "link_prediction"
    dataset: str = "disease_lp"
    r: float = 2.0
    t: float = 1.0
    val_fraction: float = 0.05
    test_fraction: float = 0.10

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("task.r", self.r)
        check_range("task.t", self.t, low=0, low_inclusive=False, note="Fermi-Dirac temperature")
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            check_range(f"task.{key}", value, low=0, high=1, low_inclusive=False, high_inclusive=False)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError("task.val_fraction + task.test_fraction: must leave training edges (< 1)")


# --------------------------------------------------------------------------------------------
# Tasks


def _step_generator(seed: int, index: int) -> torch.Generator:
    # A generator that depends only on (seed, index): train_batch stays a pure function of it.
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


class _GraphTask(Task):
    """Common parts: the graph, the model, and running the encoder in eval mode."""

    higher_is_better = True

    def epochs_seen(self, units: float, steps: int) -> float:
        """Every step is one full-batch pass over the training nodes or edges."""
        return float(steps)

    @cached_property
    def graph(self) -> Graph:
        c = self.config
        return load_graph(c.dataset, c.data_dir, c.split_seed, c.tree_nodes, c.download)

    def _model_kwargs(self) -> dict[str, Any]:
        c = self.config
        return dict(in_features=self.graph.features.shape[1], hidden=c.hidden, n_layers=c.n_layers,
                    K=c.curvature, dropout=c.dropout, use_bias=c.use_bias)

    def _forward_eval(self, model: nn.Module, edge_index: torch.Tensor, pairs=None) -> torch.Tensor:
        # Full-graph forward in eval mode, restoring the caller's mode; outputs float32 on the CPU.
        device = next(model.parameters()).device
        with eval_mode(model), torch.no_grad():
            pairs = None if pairs is None else pairs.to(device)
            out = model(self.graph.features.to(device), edge_index.to(device), pairs)
        return out.float().cpu()

    def describe(self) -> dict[str, Any]:
        g = self.graph
        return {"dataset": g.name, "nodes": g.num_nodes, "edges": g.num_edges,
                "features": g.features.shape[1], "classes": g.num_classes}


class NodeClassificationTask(_GraphTask):
    """Full-batch node classification; batch = the whole graph plus the training node ids."""

    selection_metric = "val_f1"
    report_metric = "test_f1"

    def build_model(self) -> nn.Module:
        if self.graph.num_classes == 0:
            raise DataError(f"{self.config.dataset}: node classification needs labels "
                                 f"(labels.npy or labels.csv in the folder)")
        return HyboNetGCN(n_classes=self.graph.num_classes, **self._model_kwargs())

    def train_batch(self, index: int) -> dict[str, torch.Tensor]:
        g = self.graph
        return {"features": g.features, "edge_index": g.edge_index, "labels": g.labels, "nodes": g.train_idx}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        nodes = batch["nodes"]
        logits = model(batch["features"], batch["edge_index"])[nodes]
        return F.cross_entropy(logits.float(), batch["labels"][nodes]), float(nodes.numel())

    def evaluate(self, model: nn.Module, split: str = "val", max_batches: int = 0) -> dict[str, float]:
        g = self.graph
        splits = {"train": g.train_idx, "val": g.val_idx, "test": g.test_idx}
        if split not in splits:
            raise UsageError(f"unknown split {split!r}: the node_classification task has {sorted(splits)}")
        nodes = splits[split]
        logits = self._forward_eval(model, g.edge_index)[nodes]
        labels = g.labels[nodes]
        micro, macro = f1_scores(logits.argmax(-1), labels, g.num_classes)
        loss = float(F.cross_entropy(logits, labels))
        return {f"{split}_loss": loss, f"{split}_f1": micro, f"{split}_macro_f1": macro}

    def final_metrics(self, model: nn.Module) -> dict[str, float]:
        return self.evaluate(model, "test")

    def describe(self) -> dict[str, Any]:
        g = self.graph
        return {**super().describe(), "split": [len(g.train_idx), len(g.val_idx), len(g.test_idx)]}


class LinkPredictionTask(_GraphTask):
    """Full-batch link prediction; batch = training graph, its edges and fresh negatives."""

    selection_metric = "val_roc_auc"
    report_metric = "test_roc_auc"

    @cached_property
    def split(self) -> LinkSplit:
        c = self.config
        return split_edges(self.graph, c.split_seed, c.val_fraction, c.test_fraction)

    def build_model(self) -> nn.Module:
        return HyboNetGCN(n_classes=0, fd_r=self.config.r, fd_t=self.config.t, **self._model_kwargs())

    def train_batch(self, index: int) -> dict[str, torch.Tensor]:
        s = self.split
        # Negatives avoid training edges only: excluding held-out edges too would leak them.
        neg = sample_negative_edges(self.graph.num_nodes, s.train_pos.shape[1], s.train_pos,
                                    _step_generator(self.seed, index), distinct=False)
        return {"features": self.graph.features, "edge_index": s.train_edge_index, "pos": s.train_pos, "neg": neg}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        pairs = torch.cat([batch["pos"], batch["neg"]], dim=1)
        logits = model(batch["features"], batch["edge_index"], pairs).float()
        target = torch.cat([torch.ones(batch["pos"].shape[1]), torch.zeros(batch["neg"].shape[1])]).to(logits.device)
        return F.binary_cross_entropy_with_logits(logits, target), float(pairs.shape[1])

    def evaluate(self, model: nn.Module, split: str = "val", max_batches: int = 0) -> dict[str, float]:
        s = self.split
        splits = {"val": (s.val_pos, s.val_neg), "test": (s.test_pos, s.test_neg)}
        if split not in splits:
            raise UsageError(f"unknown split {split!r}: the link_prediction task has {sorted(splits)}")
        pos, neg = splits[split]
        logits = self._forward_eval(model, s.train_edge_index, torch.cat([pos, neg], dim=1))
        labels = torch.cat([torch.ones(pos.shape[1]), torch.zeros(neg.shape[1])])
        return {
            f"{split}_loss": float(F.binary_cross_entropy_with_logits(logits, labels)),
            f"{split}_roc_auc": roc_auc(logits, labels),
            f"{split}_ap": average_precision(logits, labels),
        }

    def final_metrics(self, model: nn.Module) -> dict[str, float]:
        return self.evaluate(model, "test")

    def describe(self) -> dict[str, Any]:
        s = self.split
        sizes = [s.train_pos.shape[1], s.val_pos.shape[1], s.test_pos.shape[1]]
        return {**super().describe(), "edge_split": sizes}
