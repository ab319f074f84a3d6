"""Activation checkpointing: the same gradients and state-dict keys, fewer bytes saved for backward."""

import copy
import json

import pytest
import torch
from runconfigs import tiny_lm_config
from torch.autograd.graph import saved_tensors_hooks

import sst
from sst.config import build_config
from sst.errors import ConfigError
from sst.models.hf import build_hf_model, lm_logits
from sst.models.hyperbolic_transformer import HyboNetTransformer, HyboNetTransformerConfig
from sst.models.llama import build_llama
from sst.models.translation import TranslationConfig, TranslationTransformer
from sst.train.logging import RunWarning, read_metrics
from sst.train.loop import CONFIG_HISTORY, train
from sst.models.recompute import (
    apply_activation_checkpointing,
    checkpointed_blocks,
    is_recomputed,
    recomputed_blocks,
)

METHODS = {
    "full": None,
    "sst": sst.SSTConfig(rank=4, resample_every=3),
    "lora": sst.LoRAConfig(rank=4),
}


def _llama(n_layers=2, dtype=torch.float64, method=None):
    torch.manual_seed(0)
    model = build_llama("tiny", vocab_size=64, n_layers=n_layers, max_seq_len=64).to(dtype)
    if method is not None:
        model, _ = sst.convert(model, method, seed=1)
        with torch.no_grad():  # LoRA's B starts at 0, which would leave A without a gradient
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
    return model.train()


def _lm_loss(model, ids):
    logits = lm_logits(model, ids[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def _grads(model, loss_of) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss_of(model).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def _assert_same_grads(plain, recomputed, loss_of, **tol):
    a, b = _grads(plain, loss_of), _grads(recomputed, loss_of)
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(b[name], a[name], msg=name, **tol)
        assert a[name].abs().sum() > 0, name  # a gradient that could differ


@pytest.mark.parametrize("method", list(METHODS))
def test_llama_gradients_are_unchanged(method):
    plain = _llama(3, method=METHODS[method])
    recomputed = copy.deepcopy(plain)
    assert apply_activation_checkpointing(recomputed) == 3
    assert all(is_recomputed(block) for block in recomputed.layers)
    ids = torch.randint(0, 64, (2, 17))
    _assert_same_grads(plain, recomputed, lambda m: _lm_loss(m, ids), rtol=1e-12, atol=1e-12)


def test_recomputation_really_replays_the_blocks():
    model = _llama(2)
    apply_activation_checkpointing(model)
    calls = []
    block = model.layers[0]
    # a pre-hook: the replay stops as soon as the last saved tensor is recomputed, inside the MLP
    block.mlp.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    _lm_loss(model, torch.randint(0, 64, (1, 9))).backward()
    assert len(calls) == 2  # the forward, then its replay in backward
    calls.clear()
    with torch.no_grad():  # evaluation runs each block once
        model(torch.randint(0, 64, (1, 9)))
    model.eval()
    _lm_loss(model, torch.randint(0, 64, (1, 9))).backward()
    assert len(calls) == 2  # one no-grad call and one eval-mode call: neither is replayed


def _saved_bytes(model, loss_of) -> int:
    """Bytes of the distinct storages autograd saves for backward, not counting parameters/buffers."""
    owned = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in owned:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        loss = loss_of(model)
    loss.backward()
    return sum(saved.values())


@pytest.mark.parametrize("method", ["full", "sst"])
def test_checkpointing_saves_fewer_bytes_for_backward(method):
    model = _llama(4, dtype=torch.float32, method=METHODS[method])
    ids = torch.randint(0, 64, (2, 33))
    plain = _saved_bytes(model, lambda m: _lm_loss(m, ids))
    assert apply_activation_checkpointing(model) == 4
    recomputed = _saved_bytes(model, lambda m: _lm_loss(m, ids))
    # each block then keeps only its input (2 x 32 x 64 floats) of the many tensors it saved
    assert 0 < recomputed < plain / 3, (recomputed, plain)


@pytest.mark.parametrize("method", list(METHODS))
def test_state_dict_keys_are_unchanged_and_load_both_ways(method):
    plain = _llama(2, method=METHODS[method])
    recomputed = _llama(2, method=METHODS[method])
    apply_activation_checkpointing(recomputed)
    assert list(recomputed.state_dict()) == list(plain.state_dict())
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.01)
    recomputed.load_state_dict(plain.state_dict())
    plain.load_state_dict(recomputed.state_dict())
    ids = torch.randint(0, 64, (1, 9))
    torch.testing.assert_close(recomputed(ids), plain(ids), rtol=0, atol=0)


def test_applying_twice_wraps_once():
    model = _llama(2)
    assert checkpointed_blocks(model) == []
    assert apply_activation_checkpointing(model) == apply_activation_checkpointing(model) == 2
    assert checkpointed_blocks(model) == list(model.layers)
    calls = []
    model.layers[1].register_forward_hook(lambda *_: calls.append(1))
    _lm_loss(model, torch.randint(0, 64, (1, 9))).backward()
    assert len(calls) == 1  # module hooks stay outside the checkpoint: the replay calls forward only


def test_a_deep_copy_recomputes_its_own_blocks():
    model = _llama(2)
    apply_activation_checkpointing(model)
    twin = copy.deepcopy(model)
    assert twin.layers[0].forward.block is twin.layers[0]
    ids = torch.randint(0, 64, (1, 9))
    _lm_loss(twin, ids).backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for p in twin.parameters())


@pytest.mark.parametrize("model_class", ["translation", "hyperbolic"])
def test_encoder_decoder_gradients_are_unchanged(model_class):
    torch.manual_seed(0)
    if model_class == "translation":
        plain = TranslationTransformer(TranslationConfig(vocab_size=40, d_model=32, n_heads=4, d_ff=48,
                                                         n_layers=2, dropout=0.1))
    else:
        plain = HyboNetTransformer(HyboNetTransformerConfig(vocab_size=40, d_model=32, n_heads=4, d_ff=48,
                                                            n_layers=2, dropout=0.1))
    # float32: the Lorentz residual computes in float32 whatever the input
    plain = plain.train()
    recomputed = copy.deepcopy(plain)
    assert apply_activation_checkpointing(recomputed) == 4 == len(recomputed_blocks(recomputed))
    src, tgt = torch.randint(3, 40, (2, 7)), torch.randint(3, 40, (2, 6))

    def loss_of(model):
        torch.manual_seed(1)  # the same dropout masks; the replay restores the random state itself
        return model(src, tgt).logsumexp(-1).mean()

    _assert_same_grads(plain, recomputed, loss_of, rtol=1e-5, atol=1e-6)


def test_a_model_without_blocks_is_a_config_error(tiny_mlp):
    with pytest.raises(ConfigError, match=r"train.activation_checkpointing: the model TinyMLP has no repeated blocks"):
        apply_activation_checkpointing(tiny_mlp)


def test_hf_llama_uses_its_own_checkpointing():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    plain = build_hf_model("llama-tiny", vocab_size=64, max_seq_len=32, num_hidden_layers=3).double().train()
    recomputed = copy.deepcopy(plain)
    assert apply_activation_checkpointing(recomputed) == 3
    flagged = [m for m in recomputed.model.layers if m.gradient_checkpointing]
    assert len(flagged) == 3 and not any(m.gradient_checkpointing for m in plain.model.layers)
    assert checkpointed_blocks(recomputed) == flagged and checkpointed_blocks(plain) == []
    assert list(recomputed.state_dict()) == list(plain.state_dict())
    ids = torch.randint(0, 64, (2, 17))
    assert _saved_bytes(recomputed, lambda m: _lm_loss(m, ids)) < _saved_bytes(plain, lambda m: _lm_loss(m, ids))
    _assert_same_grads(plain, recomputed, lambda m: _lm_loss(m, ids), rtol=1e-12, atol=1e-12)


def test_hf_llama_with_sst_layers():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = build_hf_model("llama-tiny", vocab_size=64, max_seq_len=32).double()
    plain, _ = sst.convert(model, METHODS["sst"], seed=1)
    plain.train()
    recomputed = copy.deepcopy(plain)
    assert apply_activation_checkpointing(recomputed) == 2
    ids = torch.randint(0, 64, (2, 17))
    _assert_same_grads(plain, recomputed, lambda m: _lm_loss(m, ids), rtol=1e-12, atol=1e-12)


def test_training_with_checkpointing_and_changing_it_on_resume(tmp_path):
    off = train(build_config(tiny_lm_config(tmp_path / "off", steps=3)))
    on = train(build_config(tiny_lm_config(tmp_path / "on", steps=2, activation_checkpointing=True)))
    assert on["steps"] == 2
    # the switch may change on resume; the change is warned about and recorded
    with pytest.warns(RunWarning, match="train.activation_checkpointing changed on resume at step 2"):
        resumed = train(build_config(tiny_lm_config(tmp_path / "on", steps=3)), resume=True)
    history = [json.loads(line) for line in (tmp_path / "on" / CONFIG_HISTORY).read_text().splitlines()]
    assert history == [{"step": 2, "key": "train.activation_checkpointing", "old": True, "new": False}]
    # the same gradients, hence the same run (up to the order of floating-point sums)
    losses = {name: [r["loss"] for r in read_metrics(tmp_path / name, "train")] for name in ("on", "off")}
    assert len(losses["on"]) == 3
    assert losses["on"] == pytest.approx(losses["off"], rel=1e-5)
    assert resumed["val_loss"] == pytest.approx(off["val_loss"], rel=1e-5)


def test_cli_train_with_checkpointing(tmp_path, capsys):
    from sst.cli import main

    out = tmp_path / "run"
    assert main(["train", "tiny/translation", "train.steps=2", "train.progress=false",
                 "train.activation_checkpointing=true", "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["steps"] == 2
    # a model without repeated blocks: a one-line error naming the key and the model
    assert main(["train", "tiny/node_classification", "train.steps=1", "train.progress=false",
                 "train.activation_checkpointing=true", "--out", str(tmp_path / "gcn")]) == 2
    err = capsys.readouterr().err
    assert "train.activation_checkpointing" in err and "HyboNetGCN" in err


@pytest.mark.slow
def test_compiles_without_graph_breaks_with_sst_layers():
    plain = _llama(2, dtype=torch.float32, method=METHODS["sst"])
    recomputed = copy.deepcopy(plain)
    apply_activation_checkpointing(recomputed)
    torch._dynamo.reset()
    compiled = torch.compile(recomputed, backend="aot_eager", fullgraph=True)  # a graph break raises
    ids = torch.randint(0, 64, (2, 17))
    recomputed.zero_grad(set_to_none=True)
    _lm_loss(compiled, ids).backward()
    expected = _grads(plain, lambda m: _lm_loss(m, ids))
    for name, p in recomputed.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, expected[name], rtol=1e-5, atol=1e-7, msg=name)
