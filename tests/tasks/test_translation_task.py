"""Translation task: config checks, exact batch stream, loss/metrics, BLEU against a hand computation."""

import math

import pytest
import torch

from sst.config import ConfigError, build_config, from_dict
from sst.tasks.translation import (
    TranslationTask,
    TranslationTaskConfig,
    corpus_bleu,
)
from sst.train.loop import train

pytest.importorskip("sacrebleu")


def tiny_config(tmp_path, **overrides) -> TranslationTaskConfig:
    fields = dict(
        data="synthetic", data_dir=str(tmp_path / "synthetic"), cache_dir=str(tmp_path / "cache"),
        vocab_size=64, d_model=32, n_layers=1, n_heads=2, dropout=0.0, max_tokens=256, max_len=16,
        bleu_max_sentences=30,
    )  # fmt: skip
    fields.update(overrides)
    return TranslationTaskConfig(**fields)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    config = tiny_config(tmp_path_factory.mktemp("mt"))
    return TranslationTask(config, seed=3, run_dir=tmp_path_factory.mktemp("run"))


def test_bleu_matches_hand_computation():
    hyps = ["the cat sat on the mat", "a dog runs in the park"]
    refs = ["the cat is on the mat", "a dog runs in a park today"]
    # Clipped n-gram matches over both sentences: 1-grams 10/12, 2-grams 6/10, 3-grams 3/8,
    # 4-grams 1/6; hypothesis length 12 < reference length 13 gives BP = exp(1 - 13/12).
    precisions = [10 / 12, 6 / 10, 3 / 8, 1 / 6]
    expected = 100 * math.exp(1 - 13 / 12) * math.exp(sum(map(math.log, precisions)) / 4)
    assert corpus_bleu(hyps, refs, tokenize="none") == pytest.approx(expected, abs=1e-6)
    assert corpus_bleu(hyps, refs) == pytest.approx(expected, abs=1e-6)  # 13a: no punctuation here
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_bleu(hyps, refs[:1])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"d_model": 30, "n_heads": 4}, "task.n_heads"),
        ({"dropout": 1.0}, "task.dropout"),
        ({"max_tokens": 64, "max_len": 128}, "task.max_tokens"),
        ({"beam_size": 0}, "task.beam_size"),
        ({"tgt_lang": "de"}, "task.tgt_lang"),
        ({"label_smoothing": -0.1}, "task.label_smoothing"),
    ],
)
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        TranslationTaskConfig(**overrides)


def test_config_from_plain_data_and_registry():
    from sst.tasks import TASK_CLASSES, TASK_CONFIGS

    assert TASK_CONFIGS["translation"] is TranslationTaskConfig
    assert TASK_CLASSES["translation"] is TranslationTask
    data = {"name": "translation", "data": "synthetic", "beam_size": 4}
    cfg = from_dict(TranslationTaskConfig, data, "task")
    assert cfg.beam_size == 4 and cfg.d_model == 128
    with pytest.raises(ConfigError, match="task.data"):
        from_dict(TranslationTaskConfig, {"data": "wmt"}, "task")


def test_train_batches_are_pure_and_cover_each_epoch(task):
    n = len(task.train_batches)
    first = task.train_batch(5)
    assert all(torch.equal(first[k], task.train_batch(5)[k]) for k in first)
    for epoch in range(2):
        seen = []
        for i in range(epoch * n, (epoch + 1) * n):
            batch = task.train_batch(i)
            assert batch["src"].numel() <= 256 and batch["tgt_in"].numel() <= 256
            seen += [tuple(row[row != 0].tolist()) for row in batch["src"]]
        expected = [tuple(ids + [2]) for ids in task.train_split.src_ids]
        assert sorted(seen) == sorted(expected)  # every sentence exactly once per epoch
    epoch0 = [task.train_batch(i)["src"].shape for i in range(n)]
    epoch1 = [task.train_batch(n + i)["src"].shape for i in range(n)]
    assert epoch0 != epoch1 and sorted(epoch0) == sorted(epoch1)  # same batches, new order
    other_seed = TranslationTask(task.config, seed=4, run_dir=task.run_dir)
    assert [other_seed.train_batch(i)["src"].shape for i in range(n)] != epoch0


def test_loss_training_and_metrics(task):
    torch.manual_seed(0)
    model = task.build_model()
    assert model.config.vocab_size == task.data.vocab_size <= 64
    batch = task.train_batch(0)
    loss, count = task.loss(model, batch)
    assert count == float((batch["tgt_out"] != 0).sum()) and loss.ndim == 0
    assert loss.item() == pytest.approx(math.log(task.data.vocab_size), rel=0.3)

    before = task.evaluate(model, "val")
    assert set(before) == {"val_loss", "val_ppl", "val_bleu"}
    assert before["val_ppl"] == pytest.approx(math.exp(before["val_loss"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(300):
        loss, _ = task.loss(model, task.train_batch(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = task.evaluate(model, "val", max_batches=2)
    assert model.training  # restored
    assert after["val_loss"] < before["val_loss"] - 1.0
    assert after["val_bleu"] > before["val_bleu"] + 15.0
    final = task.final_metrics(model)
    assert set(final) == {"test_loss", "test_ppl", "test_bleu"}

    task.config.beam_size = 3
    try:
        beam = task.evaluate(model, "val", max_batches=1)
    finally:
        task.config.beam_size = 1
    assert beam["val_bleu"] > before["val_bleu"] + 15.0
    assert task.describe()["sentences"] == {"train": 2000, "val": 100, "test": 100}


def test_bleu_off_selects_and_reports_on_loss(tmp_path):
    config = tiny_config(tmp_path, eval_bleu=False)
    task = TranslationTask(config, seed=0, run_dir=tmp_path / "run")
    assert (task.selection_metric, task.report_metric, task.higher_is_better) == ("val_loss", "test_loss", False)
    run = {
        "task": {"name": "translation", **{k: getattr(config, k) for k in (
            "data", "data_dir", "cache_dir", "vocab_size", "d_model", "n_layers", "n_heads", "dropout",
            "max_tokens", "max_len", "eval_bleu")}},
        "method": {"name": "full"},
        "train": {"steps": 2, "lr": 1e-3, "warmup_steps": 1, "eval_batches": 1, "progress": False},
        "out_dir": str(tmp_path / "run"),
    }  # fmt: skip
    results = train(build_config(run))
    assert results["metric"] == "test_loss" and not results["higher_is_better"]
    assert results["test_loss"] > 0 and not any("bleu" in key for key in results)
