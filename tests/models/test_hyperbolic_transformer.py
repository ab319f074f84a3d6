"""HyboNet Transformer: points on the hyperboloid, masks, incremental decoding, surgery, copy task."""

import pytest
import torch
from copytask import BOS, EOS, PAD, copy_batch

import sst
from sst.hyperbolic import math as hm
from sst.hyperbolic.layers import LorentzLinear
from sst.models.hyperbolic_transformer import (
    HyboNetTransformer,
    HyboNetTransformerConfig,
    LorentzDecoderLayer,
    LorentzEncoderLayer,
)
from sst.models.translation import beam_search, greedy_decode, label_smoothed_cross_entropy
from sst.spectral import SpectralLinear


def random_model(seed: int = 0, **overrides) -> HyboNetTransformer:
    fields = dict(vocab_size=12, d_model=16, n_layers=2, n_heads=2, d_ff=32, dropout=0.0, max_len=16)
    fields.update(overrides)
    torch.manual_seed(seed)
    return HyboNetTransformer(HyboNetTransformerConfig(**fields)).eval()


def sample(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 12, (3, 7), generator=g), torch.randint(3, 12, (3, 5), generator=g)


@pytest.mark.parametrize("K", [1.0, 2.5])
def test_points_stay_on_the_hyperboloid_through_every_layer(K):
    model = random_model(K=K)
    outputs = []
    for module in model.modules():
        if isinstance(module, (LorentzEncoderLayer, LorentzDecoderLayer, LorentzLinear)):
            module.register_forward_hook(lambda mod, args, out: outputs.append(out))
    src, tgt = sample()
    with hm.validate_inputs(True):  # every layer also checks its input points
        logits = model(src, tgt)
    assert logits.shape == (3, 5, 12) and torch.isfinite(logits).all()
    # 2 encoder + 2 decoder layers, each attention has 4 LorentzLinear and each FFN 2
    assert len(outputs) == 4 + 2 * (4 + 2) + 2 * (2 * 4 + 2)
    for out in outputs:
        assert out.dtype == torch.float32
        assert hm.manifold_residual(out, K).max() < 1e-5
        assert (out[..., 0] >= K**0.5 * (1 - 1e-6)).all()
    memory, mask = model.encode(src)
    assert memory.shape == (3, 7, 17) and mask.all()
    assert hm.is_on_manifold(memory.double(), K, rtol=1e-5)


def test_autocast_keeps_float32_points():
    model = random_model()
    src, tgt = sample()
    reference = model(src, tgt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        memory, _ = model.encode(src)
        logits = model(src, tgt)
    assert memory.dtype == torch.float32 and hm.manifold_residual(memory).max() < 1e-5
    assert (logits.float() - reference).abs().max() < 0.25 * reference.abs().max()


def test_decoder_is_causal_and_source_padding_is_invisible():
    model = random_model()
    src, tgt = sample()
    logits = model(src, tgt)
    changed = tgt.clone()
    changed[:, 3] = (changed[:, 3] + 1 - 3) % 9 + 3
    after = model(src, changed)
    assert torch.allclose(after[:, :3], logits[:, :3], atol=1e-5)
    assert (after[:, 3:] - logits[:, 3:]).abs().max() > 1e-3
    padded = torch.cat([src, torch.full((3, 4), PAD)], dim=1)
    assert torch.allclose(model(padded, tgt), logits, atol=1e-5)
    # padding one sentence of the batch does not change the others' (or its own) real positions
    ragged = src.clone()
    ragged[0, 5:] = PAD
    alone = model(src[:1, :5], tgt[:1])
    assert torch.allclose(model(ragged, tgt)[0], alone[0], atol=1e-5)
    assert torch.allclose(model(ragged, tgt)[1:], logits[1:], atol=1e-5)


def test_incremental_decoding_matches_full_decoding():
    model = random_model()
    src, tgt = sample()
    memory, mask = model.encode(src)
    full = model.decode(tgt, memory, mask)
    cache: dict = {}
    steps = [model.decode(tgt[:, :2], memory, mask, cache)]
    steps += [model.decode(tgt[:, t : t + 1], memory, mask, cache) for t in range(2, 5)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert cache["1.self.k"].shape == (3, 2, 5, 9) and cache["0.cross.v"].shape == (3, 2, 7, 9)
    with pytest.raises(ValueError, match="max_len=16"):
        model.decode(torch.full((3, 17), 4), memory, mask)


def test_sst_conversion_keeps_outputs_and_targets_inner_linears():
    model = random_model()
    src, tgt = sample()
    before = model(src, tgt)
    model, method = sst.convert(model, sst.SSTConfig(rank=2))
    spectral = {name for name, m in model.named_modules() if isinstance(m, SpectralLinear)}
    per_layer = ["q_proj", "k_proj", "v_proj", "o_proj"]
    expected = {f"encoder.{i}.self_attn.{p}.linear" for i in range(2) for p in per_layer}
    for i in range(2):
        expected |= {f"decoder.{i}.{a}.{p}.linear" for a in ("self_attn", "cross_attn") for p in per_layer}
        expected |= {f"{part}.{i}.ffn.{fc}.linear" for part in ("encoder", "decoder") for fc in ("fc1", "fc2")}
    assert spectral == expected
    assert type(model.output_proj) is torch.nn.Linear
    after = model(src, tgt)
    assert torch.allclose(after, before, atol=1e-4, rtol=1e-4)
    assert hm.manifold_residual(model.encode(src)[0]).max() < 1e-5


def test_trained_copy_model_decodes_and_beam_agrees():
    torch.manual_seed(0)
    cfg = HyboNetTransformerConfig(vocab_size=12, d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0, max_len=16)
    model = HyboNetTransformer(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    held_out = copy_batch(torch.Generator().manual_seed(123), batch=32)
    expected = [row[row != PAD][:-1].tolist() for row in held_out["src"]]
    first = None
    for step in range(1, 301):
        batch = copy_batch(generator)
        loss = label_smoothed_cross_entropy(model(batch["src"], batch["tgt_in"]), batch["tgt_out"], PAD)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            model.eval()
            greedy = greedy_decode(model, held_out["src"], max_len=10)
            model.train()
            if sum(g == e for g, e in zip(greedy, expected)) >= 28:
                break
    model.eval()
    assert loss.item() < first / 4
    greedy = greedy_decode(model, held_out["src"], max_len=10)
    assert sum(g == e for g, e in zip(greedy, expected)) >= 28  # of 32
    beam = beam_search(model, held_out["src"], beam_size=3, max_len=10)
    assert sum(b == e for b, e in zip(beam, expected)) >= 28
    assert model.greedy_decode(held_out["src"][:4], 10) == greedy[:4]
    assert BOS not in sum(greedy, []) and EOS not in sum(greedy, [])
