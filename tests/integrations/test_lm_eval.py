"""`sst eval --lm-eval`: a clear error without lm-eval; the adapter answers the harness's requests."""

from __future__ import annotations

import json
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from runconfigs import corpus_lm_config as lm_config

from sst.cli import main
from sst.config import build_config
from sst.inference.loading import load_run
from sst.models.hf import lm_logits
from sst.train.loop import train


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm-eval-run")
    train(build_config(lm_config(corpus, out, {"name": "sst", "rank": 4}, model="tiny", steps=2)))
    return out


@pytest.fixture
def fake_lm_eval(monkeypatch):
    """A stand-in harness: its evaluate sends one request of each kind and returns the answers."""
    module, api, model_module = (types.ModuleType(n) for n in ("lm_eval", "lm_eval.api", "lm_eval.api.model"))
    model_module.LM = type("LM", (), {})
    api.model, module.api = model_module, api

    def simple_evaluate(model, tasks, limit=None):
        ask = lambda *args: [SimpleNamespace(args=args)]  # noqa: E731
        return {"results": {tasks[0]: {
            "loglikelihood": model.loglikelihood(ask("the model", " layer"))[0],
            "rolling": model.loglikelihood_rolling(ask("the spectral model"))[0],
            "generated": model.generate_until(ask("the", {"until": ["\n"], "max_gen_toks": 3}))[0],
            "limit": limit}}}

    module.simple_evaluate = simple_evaluate
    for name, mod in (("lm_eval", module), ("lm_eval.api", api), ("lm_eval.api.model", model_module)):
        monkeypatch.setitem(sys.modules, name, mod)
    return module


def test_missing_lm_eval_is_one_clear_error(run_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval raises ImportError
    assert main(["eval", str(run_dir), "--lm-eval", "hellaswag"]) == 2
    assert "--lm-eval needs the `lm_eval` package" in capsys.readouterr().err


def test_the_adapter_scores_with_the_model(run_dir, fake_lm_eval, capsys):
    assert main(["eval", str(run_dir), "--lm-eval", "toy", "--max-batches", "5"]) == 0
    answer = json.loads(capsys.readouterr().out)["lm_eval"]["toy"]
    assert answer["limit"] == 5 and isinstance(answer["generated"], str)
    run = load_run(run_dir)
    tokenizer, eot = run.task.data.tokenizer, run.task.data.tokenizer.token_to_id("<|endoftext|>")
    ids = [eot] + tokenizer.encode("the spectral model").ids
    with torch.no_grad():
        logprobs = torch.log_softmax(lm_logits(run.model, torch.tensor([ids[:-1]]))[0], -1)
    expected = float(logprobs.gather(1, torch.tensor(ids[1:])[:, None]).sum())
    assert answer["rolling"] == pytest.approx(expected, rel=1e-5)
    context, continuation = tokenizer.encode("the model").ids, tokenizer.encode(" layer").ids
    full = context + continuation
    with torch.no_grad():
        logprobs = torch.log_softmax(lm_logits(run.model, torch.tensor([full[:-1]]))[0], -1)
    tail = logprobs[len(context) - 1:]
    assert answer["loglikelihood"][0] == pytest.approx(float(tail.gather(1, torch.tensor(continuation)[:, None]).sum()), rel=1e-5)
    assert answer["loglikelihood"][1] == bool((tail.argmax(-1) == torch.tensor(continuation)).all())
