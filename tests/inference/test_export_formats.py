"""Every export format reads back in `sst eval` and `sst generate`; hf exports of our LLaMA load in
plain transformers with equal logits and our end-of-text id as bos/eos."""

from __future__ import annotations

import json

import pytest
import torch

from sst.cli import main
from sst.data.tokenizer import EOT
from sst.inference.export import export_run
from sst.inference.loading import load_run
from sst.inference.opening import open_for_inference
from sst.models.hf import lm_logits

FORMATS = {"dense": {}, "lowrank": {"ratio": 0.25}, "pifa": {"ratio": 0.25}, "hf": {}}


@pytest.fixture(scope="module")
def exports(sst_run, tmp_path_factory):
    if "hf" in FORMATS:
        pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("exports")
    return {name: export_run(sst_run, root / name, name, **kw) for name, kw in FORMATS.items()}


def evaluated(path, capsys) -> dict:
    assert main(["eval", str(path), "--max-batches", "2"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_export_evaluates_and_generates_through_the_cli(exports, sst_run, capsys, name):
    run_loss = evaluated(sst_run, capsys)["val_loss"]
    loss = evaluated(exports[name], capsys)["val_loss"]
    if name in ("dense", "hf"):  # merged without pruning: the run's own function
        assert loss == pytest.approx(run_loss, rel=1e-5)
    else:
        assert 0 < loss < 2 * run_loss
    assert main(["generate", str(exports[name]), "--prompt", "the model", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("the model")


def test_open_for_inference_names_the_export_format(exports):
    run = open_for_inference(exports["hf"])
    assert run.method is None and type(run.model).__name__ == "LlamaForCausalLM"
    assert type(open_for_inference(exports["dense"]).model).__name__ == "LlamaModel"


def test_hf_export_of_our_llama_loads_in_plain_transformers(exports, sst_run):
    transformers = pytest.importorskip("transformers")
    folder = str(exports["hf"])
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert isinstance(model, transformers.LlamaForCausalLM)
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, lm_logits(load_run(sst_run).model, ids), rtol=1e-4, atol=1e-5)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    eot = tokenizer.convert_tokens_to_ids(EOT)
    assert eot == 0  # the tokenizer's first special token
    assert model.config.eos_token_id == model.config.bos_token_id == eot
    assert model.generation_config.eos_token_id == eot and tokenizer.eos_token_id == eot
    assert model.config.pad_token_id is None
