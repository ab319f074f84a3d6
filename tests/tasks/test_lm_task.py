import math

import pytest
import torch

from sst.config import ConfigError, from_dict
from sst.errors import UsageError
from sst.tasks import TASK_CLASSES, TASK_CONFIGS, build_task
from sst.tasks.lm import LMTask, LMTaskConfig


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("lm-cache"))


def make_task(cache, tmp_path, seed=0, **fields) -> LMTask:
    fields = {"seq_len": 32, "batch_size": 4, **fields}
    return build_task(LMTaskConfig(cache_dir=cache, **fields), seed, tmp_path)


def test_registered_and_loaded_from_a_mapping():
    assert TASK_CONFIGS["lm"] is LMTaskConfig and TASK_CLASSES["lm"] is LMTask
    cfg = from_dict(LMTaskConfig, {"name": "lm", "model": "hf:opt-125m", "data": ["builtin", "x.txt"], "seq_len": 256})
    assert cfg.model == "hf:opt-125m" and cfg.data == ["builtin", "x.txt"] and cfg.seq_len == 256
    assert LMTaskConfig().tie_embeddings is None and LMTask.selection_metric == "val_loss"
    assert LMTask.higher_is_better is False


@pytest.mark.parametrize(
    "fields, key",
    [
        ({"model": "gpt-5"}, "task.model"),
        ({"model": "hf:llama-7b"}, "task.model"),
        ({"seq_len": 0}, "task.seq_len"),
        ({"batch_size": -1}, "task.batch_size"),
        ({"d_model": -4}, "task.d_model"),
        ({"vocab_size": 100}, "task.vocab_size"),
        ({"val_fraction": 1.0}, "task.val_fraction"),
        ({"data": []}, "task.data"),
        ({"data": ["hf:c4"]}, "task.max_train_tokens"),
    ],
)
def test_config_validation_names_the_field(fields, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        LMTaskConfig(**fields)


def test_train_batch_shapes_shift_and_purity(cache, tmp_path):
    task = make_task(cache, tmp_path)
    batch = task.train_batch(5)
    assert batch["input_ids"].shape == (4, 32) and batch["labels"].shape == (4, 32)
    assert batch["input_ids"].dtype == torch.long and batch["labels"].dtype == torch.long
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])
    assert int(batch["input_ids"].max()) < 8192
    task.train_batch(123_456)  # a later epoch
    again = make_task(cache, tmp_path)  # a fresh task, same seed: same batch whatever came before
    assert torch.equal(again.train_batch(5)["input_ids"], batch["input_ids"])
    other_seed = make_task(cache, tmp_path, seed=1)
    assert not torch.equal(other_seed.train_batch(5)["input_ids"], batch["input_ids"])


def test_each_epoch_is_a_fresh_permutation(cache, tmp_path):
    # 32 * 4 * 5 training tokens: 20 sequences, 5 batches per epoch
    task = make_task(cache, tmp_path, max_train_tokens=32 * 4 * 5)
    assert task.n_train_sequences == 20 and task.describe()["train_tokens"] == 32 * 20 + 1

    def epoch(e):
        return torch.cat([task.train_batch(e * 5 + i)["input_ids"] for i in range(5)])

    first, second = epoch(0), epoch(1)
    key = lambda rows: sorted(tuple(r.tolist()) for r in rows)  # noqa: E731
    assert len(set(key(first))) == 20  # every sequence exactly once per epoch
    assert key(first) == key(second)
    assert not torch.equal(first, second)  # in a different order


def test_training_the_tiny_model_reduces_the_loss(cache, tmp_path):
    task = make_task(cache, tmp_path, seq_len=32, batch_size=8)
    torch.manual_seed(0)
    model = task.build_model()
    before = task.evaluate(model, max_batches=4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(30):
        loss, units = task.loss(model, task.train_batch(step))
        assert units == 8 * 32
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = task.evaluate(model, max_batches=4)
    assert before["val_loss"] == pytest.approx(math.log(8192), abs=0.3)  # near-uniform at init
    assert after["val_loss"] < 0.8 * before["val_loss"]


def test_evaluate_reports_perplexity_and_restores_mode(cache, tmp_path):
    task = make_task(cache, tmp_path)
    torch.manual_seed(0)
    model = task.build_model()
    out = task.evaluate(model, "val", max_batches=3)
    assert set(out) == {"val_loss", "val_ppl", "val_tokens"}
    assert out["val_ppl"] == pytest.approx(math.exp(out["val_loss"]), rel=1e-9)
    assert out["val_tokens"] == 3 * 4 * 32
    assert model.training  # restored
    with pytest.raises(UsageError, match="unknown split 'test': the lm task has only a 'val' split"):
        task.evaluate(model, "test")  # no test split: refused, never the val split relabelled
    with pytest.raises(ValueError, match="unknown split 'train'"):
        task.evaluate(model, "train")


def small_corpus(tmp_path, n_docs=40):
    corpus = tmp_path / "small.txt"
    corpus.write_text("\n\n".join(f"Short document number {i} with a few more words." for i in range(n_docs)))
    return str(corpus)


def test_full_validation_counts_every_sequence(cache, tmp_path):
    corpus = small_corpus(tmp_path, n_docs=200)
    task = build_task(LMTaskConfig(data=[corpus], vocab_size=300, seq_len=8, batch_size=3, cache_dir=cache), 0, tmp_path)
    n_val = len(task.data.val)
    assert task.evaluate(task.build_model())["val_tokens"] == (n_val - 1) // 8 * 8
    d = make_task(cache, tmp_path).describe()
    assert d["vocab_size"] == 8192 and d["train_documents"] == 1130 and d["val_documents"] == 59
    assert d["train_tokens"] > 15 * d["val_tokens"] > 0


def test_loss_is_float32_under_bf16_autocast(cache, tmp_path):
    task = make_task(cache, tmp_path)
    model = task.build_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = task.loss(model, task.train_batch(0))
    assert loss.dtype == torch.float32


def test_shape_overrides_and_tied_embeddings(cache, tmp_path):
    task = make_task(cache, tmp_path, d_model=32, n_layers=1, n_heads=2, d_ff=48, tie_embeddings=True)
    model = task.build_model()
    assert model.config.d_model == 32 and len(model.layers) == 1 and model.config.max_seq_len == 32
    assert model.lm_head.weight is model.embed_tokens.weight


@pytest.mark.parametrize("name", ["hf:llama-tiny", "hf:opt-tiny"])
def test_hf_models_through_the_task(cache, tmp_path, name):
    pytest.importorskip("transformers")
    task = make_task(cache, tmp_path, model=name, d_ff=96)
    model = task.build_model()
    loss, units = task.loss(model, task.train_batch(0))
    assert loss.item() == pytest.approx(math.log(8192), abs=0.5) and units == 4 * 32
    assert task.evaluate(model, max_batches=1)["val_tokens"] == 4 * 32


def test_sequence_and_batch_larger_than_the_corpus(tmp_path):
    corpus = small_corpus(tmp_path)

    def task(**fields):
        return build_task(LMTaskConfig(data=[corpus], vocab_size=300, cache_dir=str(tmp_path), **fields), 0, tmp_path)

    with pytest.raises(ValueError, match=r"the val split has \d+ tokens: 0 sequence\(s\) of seq_len 64"):
        task(seq_len=64, batch_size=1).train_batch(0)
    with pytest.raises(ValueError, match=r"the train split has \d+ tokens: \d+ sequence\(s\).*10000 needed"):
        task(seq_len=8, batch_size=10_000).train_batch(0)
