"""SSTTrainer (transformers.Trainer) trains a converted model exactly as sst's own loop does."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from runconfigs import corpus_lm_config as lm_config  # noqa: E402

import sst  # noqa: E402
from sst.build import build_run  # noqa: E402
from sst.checkpoint import LAST, find_checkpoint, load_weights  # noqa: E402
from sst.config import build_config  # noqa: E402
from sst.integrations.hf import METHOD_STATE_FILE, SSTTrainer  # noqa: E402
from sst.methods import MissedStepWarning  # noqa: E402
from sst.train.loop import train  # noqa: E402

METHODS = {
    "sst": {"name": "sst", "rank": 4, "resample_every": 2, "restart_warmup_steps": 2},
    "galore": {"name": "galore", "rank": 4, "proj_update_every": 2},
    "relora": {"name": "relora", "rank": 4, "reset_every": 2, "restart_warmup_steps": 2},
}


class Ordered(torch.utils.data.IterableDataset):
    """Rows in the given order (Trainer shuffles map-style datasets)."""

    def __init__(self, rows):
        self.rows = rows

    def __iter__(self):
        return iter(self.rows)


def rows_of(task, n_micro: int) -> list[dict]:
    """The loop's micro-batches 0..n_micro-1 as Trainer rows: HF shifts labels itself."""
    rows = []
    for i in range(n_micro):
        batch = task.train_batch(i)
        seqs = torch.cat([batch["input_ids"], batch["labels"][:, -1:]], dim=1)  # (B, T + 1)
        rows += [{"input_ids": s, "labels": s} for s in seqs]
    return rows


def trainer_args(transformers, out, config, **extra):
    tc, tk = config.train, config.task
    return transformers.TrainingArguments(**{
        "output_dir": str(out), "max_steps": tc.steps, "per_device_train_batch_size": tk.batch_size,
        "gradient_accumulation_steps": tc.grad_accum, "learning_rate": tc.lr, "lr_scheduler_type": "constant",
        "weight_decay": tc.weight_decay, "max_grad_norm": tc.grad_clip, "adam_beta1": tc.betas[0],
        "adam_beta2": tc.betas[1], "adam_epsilon": tc.adam_eps, "logging_steps": 1, "report_to": [],
        "use_cpu": True, "disable_tqdm": True, "save_strategy": "no", **extra})


def trained_by_trainer(transformers, config, out, resume=None, **extra):
    built = build_run(config, out, training=False)  # the loop's model and method, same seed
    rows = rows_of(built.task, config.train.steps * config.train.grad_accum)
    trainer = SSTTrainer(model=built.model, method=built.method, train_dataset=Ordered(rows),
                         args=trainer_args(transformers, out, config, **extra))
    trainer.train(resume_from_checkpoint=resume)
    return built.model, [r["loss"] for r in trainer.state.log_history if "loss" in r]


@pytest.mark.parametrize("name", ["sst", "galore", "relora"])
def test_trainer_equals_the_library_loop_with_grad_accumulation(tmp_path, corpus, name):
    transformers = pytest.importorskip("transformers")
    config = build_config(lm_config(corpus, tmp_path / "loop", METHODS[name], grad_accum=2))
    results = train(config)
    ours = build_run(config, tmp_path / "loop", training=False).model
    load_weights(find_checkpoint(tmp_path / "loop" / LAST), ours)

    model, losses = trained_by_trainer(transformers, config, tmp_path / "hf")
    assert losses == pytest.approx([loss for _, loss in results["loss_history"]], abs=2e-4)
    theirs = dict(model.named_parameters())
    for key, value in ours.named_parameters():
        torch.testing.assert_close(theirs[key], value, rtol=1e-4, atol=1e-5, msg=key)
    if name == "sst":  # the method's re-sampling ran (the active sets moved) in both
        for key, value in ours.state_dict().items():
            if key.endswith("active_idx"):
                assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize("name", ["sst", "galore"])
def test_trainer_resume_equals_the_uninterrupted_run(tmp_path, corpus, name):
    transformers = pytest.importorskip("transformers")
    config = build_config(lm_config(corpus, tmp_path / "unused", METHODS[name], steps=6))
    whole, _ = trained_by_trainer(transformers, config, tmp_path / "a", save_strategy="steps", save_steps=3)
    checkpoint = tmp_path / "a" / "checkpoint-3"
    assert (checkpoint / METHOD_STATE_FILE).is_file()
    resumed, _ = trained_by_trainer(transformers, config, tmp_path / "a", resume=str(checkpoint))
    expected = whole.state_dict()
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    loaded, method = sst.from_pretrained(tmp_path / "a" / "checkpoint-6")  # a Trainer checkpoint, one call
    assert method.config.name == name and method.config.rank == 4
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_a_bare_trainer_warns_at_the_first_optimizer_step(tmp_path):
    transformers = pytest.importorskip("transformers")
    from sst.models.hf import build_hf_model

    model, method = sst.convert(build_hf_model("llama-tiny", 64, 16), sst.SSTConfig(rank=2))
    rows = [{"input_ids": r, "labels": r} for r in torch.randint(0, 64, (4, 9))]
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2,
                                          report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no")
    with pytest.warns(MissedStepWarning, match="not built by the method's build_optimizer"):
        transformers.Trainer(model=model, args=args, train_dataset=rows).train()


def test_a_loop_without_after_step_warns_and_one_with_it_does_not(tiny_mlp):
    model, method = sst.convert(tiny_mlp, sst.SSTConfig(rank=2, resample_every=1))
    optimizer = method.build_optimizer(model, lr=1e-3)
    x = torch.randn(3, 12, dtype=torch.float64)

    def step():
        model(x).sum().backward()
        optimizer.step()
        optimizer.zero_grad()

    with warnings.catch_warnings():
        warnings.simplefilter("error", MissedStepWarning)
        for s in range(1, 3):
            step()
            method.after_step(model, optimizer, s)
    step()
    with pytest.warns(MissedStepWarning, match="after_step did not run after optimizer step 3"):
        step()


def test_full_rank_needs_no_hooks(tiny_mlp):
    model, _ = sst.convert(tiny_mlp, sst.FullConfig())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissedStepWarning)
        for _ in range(2):
            model(torch.randn(2, 12, dtype=torch.float64)).sum().backward()
            optimizer.step()


def test_the_schedule_carries_the_method_lr_factor():
    transformers = pytest.importorskip("transformers")
    from sst.errors import ConfigError
    from sst.integrations.hf import apply_lr_multiplier

    method = sst.build_method(sst.SSTConfig(rank=2, resample_every=4, restart_warmup_steps=3))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    plain = transformers.get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=12)
    hf_factor = plain.lr_lambdas[0]
    apply_lr_multiplier(plain, method)
    apply_lr_multiplier(plain, method)  # idempotent
    seen = []
    for step in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        plain.step()
    expected = [0.1 * hf_factor(s) * method.lr_multiplier(s) for s in range(12)]
    assert seen == pytest.approx(expected) and method.lr_multiplier(4) < 1  # a re-warm-up is in there
    with pytest.raises(ConfigError, match="lr_scheduler_type"):
        apply_lr_multiplier(torch.optim.lr_scheduler.StepLR(optimizer, 3), method)
