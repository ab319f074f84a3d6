"""Graph tasks: configs, metrics against hand values, batch purity, and short training runs."""

import pytest
import torch

from sst.config import ConfigError
from sst.errors import UsageError
from sst.tasks import TASK_CLASSES, TASK_CONFIGS
from sst.tasks.graph import (
    LinkPredictionConfig,
    LinkPredictionTask,
    NodeClassificationConfig,
    NodeClassificationTask,
    average_precision,
    f1_scores,
    roc_auc,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny full-batch graphs gain nothing from intra-op threads, and on a busy 2-core machine every
    # parallel kernel waits for a second core: one thread keeps these runs at ~10 ms per step.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_registry_and_config_validation():
    assert TASK_CONFIGS["node_classification"] is NodeClassificationConfig
    assert TASK_CLASSES["link_prediction"] is LinkPredictionTask
    assert NodeClassificationConfig().hidden == 16 and NodeClassificationConfig().n_layers == 2
    assert LinkPredictionConfig().dataset == "disease_lp"
    with pytest.raises(ConfigError, match="task.curvature"):
        NodeClassificationConfig(curvature=0.0)
    with pytest.raises(ConfigError, match="task.hidden"):
        NodeClassificationConfig(hidden=0)
    with pytest.raises(ConfigError, match="task.dropout"):
        NodeClassificationConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="task.t"):
        LinkPredictionConfig(t=0.0)
    with pytest.raises(ConfigError, match="task.val_fraction"):
        LinkPredictionConfig(val_fraction=0.6, test_fraction=0.5)


def test_metrics_against_hand_values():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    labels = torch.tensor([0, 0, 1, 1])
    # pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > both) -> 3 of 4
    assert roc_auc(scores, labels) == pytest.approx(0.75)
    # ranked: 0.8 (+) P=1 R=.5; 0.4 (-); 0.35 (+) P=2/3 R=1 -> 0.5 * 1 + 0.5 * 2/3
    assert average_precision(scores, labels) == pytest.approx(5 / 6)
    tied = torch.tensor([0.5, 0.5, 0.2])
    assert roc_auc(tied, torch.tensor([1, 0, 0])) == pytest.approx(0.75)  # tie counts 1/2
    assert average_precision(tied, torch.tensor([1, 0, 0])) == pytest.approx(0.5)
    assert roc_auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1, 1, 0])) == 1.0
    assert average_precision(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 0, 0])) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="positive and one negative"):
        roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))
    micro, macro = f1_scores(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 4)
    assert micro == pytest.approx(0.75)
    assert macro == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)  # class 3 absent from both: skipped


def _train(task, steps, lr=1e-2):
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for i in range(steps):
        loss, _ = task.loss(model, task.train_batch(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


def test_node_classification_learns_on_tree(tmp_path):
    task = NodeClassificationTask(NodeClassificationConfig(dataset="disease_tree", tree_nodes=400), 0, tmp_path)
    g = task.graph
    batch = task.train_batch(0)
    assert torch.equal(batch["nodes"], g.train_idx)
    assert task.loss(task.build_model(), batch)[1] == float(len(g.train_idx))
    model, losses = _train(task, 100)
    assert losses[-1] < 0.8 * losses[0]
    model.train()
    metrics = task.evaluate(model, "val")
    assert model.training  # mode restored
    assert set(metrics) == {"val_loss", "val_f1", "val_macro_f1"}
    majority = max(g.labels[g.val_idx].float().mean().item(), 1 - g.labels[g.val_idx].float().mean().item())
    assert metrics["val_f1"] > majority + 0.08, (metrics, majority)
    assert task.selection_metric == "val_f1" and task.higher_is_better
    final = task.final_metrics(model)
    assert set(final) == {"test_loss", "test_f1", "test_macro_f1"}
    assert task.describe()["split"] == [280, 60, 60]
    with pytest.raises(UsageError, match=r"unknown split 'dev': the node_classification task has \['test', 'train'"):
        task.evaluate(model, "dev")


def test_link_prediction_batches_are_pure_and_training_works(tmp_path):
    cfg = LinkPredictionConfig(dataset="disease_tree", tree_nodes=400, r=2.0, t=1.0)
    task = LinkPredictionTask(cfg, 7, tmp_path)
    b5, b5_again, b6 = task.train_batch(5), task.train_batch(5), task.train_batch(6)
    assert torch.equal(b5["neg"], b5_again["neg"]) and not torch.equal(b5["neg"], b6["neg"])
    assert not torch.equal(LinkPredictionTask(cfg, 8, tmp_path).train_batch(5)["neg"], b5["neg"])
    n = task.graph.num_nodes
    train_keys = set((b5["pos"][0] * n + b5["pos"][1]).tolist())
    assert not set((b5["neg"][0] * n + b5["neg"][1]).tolist()) & train_keys
    assert b5["neg"].shape == b5["pos"].shape
    assert torch.equal(b5["edge_index"], task.split.train_edge_index)
    model, losses = _train(task, 100)
    assert sum(losses[-10:]) < sum(losses[:10])
    metrics = task.evaluate(model, "val")
    assert set(metrics) == {"val_loss", "val_roc_auc", "val_ap"}
    assert metrics["val_roc_auc"] > 0.75 and metrics["val_ap"] > 0.6, metrics
    assert task.final_metrics(model)["test_roc_auc"] > 0.7
    assert task.selection_metric == "val_roc_auc"
