"""Encoder-decoder Transformer: masks, incremental decoding, tied weights, loss, decoding a copy task."""

import pytest
import torch
from copytask import BOS, EOS, PAD, copy_batch
from torch import nn

from sst.models.translation import (
    TranslationConfig,
    TranslationTransformer,
    beam_search,
    greedy_decode,
    label_smoothed_cross_entropy,
)


def tiny_config(**overrides) -> TranslationConfig:
    fields = dict(vocab_size=12, d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.0, max_len=16)
    fields.update(overrides)
    return TranslationConfig(**fields)


def random_model(seed: int = 0, **overrides) -> TranslationTransformer:
    torch.manual_seed(seed)
    return TranslationTransformer(tiny_config(**overrides)).eval()


@pytest.fixture(scope="module")
def copy_model():
    """A tiny model trained until greedy decoding copies held-out sentences exactly."""
    torch.manual_seed(0)
    model = TranslationTransformer(tiny_config())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    held_out = copy_batch(torch.Generator().manual_seed(123), batch=32)
    expected = [row[row != PAD][:-1].tolist() for row in held_out["src"]]
    for step in range(1, 601):
        batch = copy_batch(generator)
        loss = label_smoothed_cross_entropy(model(batch["src"], batch["tgt_in"]), batch["tgt_out"], PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            model.eval()
            if greedy_decode(model, held_out["src"], max_len=10) == expected:
                break
            model.train()
    model.eval()
    return model, held_out["src"], expected


def test_greedy_learns_to_copy_and_beam_agrees(copy_model):
    model, src, expected = copy_model
    assert model.greedy_decode(src, max_len=10) == expected
    assert model.beam_search(src, beam_size=4, max_len=10) == expected


def test_beam_of_one_is_greedy():
    model = random_model(1, vocab_size=30)
    src = torch.randint(3, 30, (5, 6))
    assert beam_search(model, src, beam_size=1, max_len=8) == greedy_decode(model, src, max_len=8)


def test_decoding_stops_at_eos_and_respects_max_len():
    model = random_model(2)
    with torch.no_grad():
        model.output_proj.weight.zero_()  # (tied: the embeddings too)
    src = torch.randint(4, 12, (3, 5))
    # All logits equal: argmax picks id 0 (pad), never eos, so decoding must stop at max_len.
    assert [len(h) for h in greedy_decode(model, src, max_len=4)] == [4, 4, 4]
    with torch.no_grad():
        model.decoder_norm.bias.fill_(1.0)
        model.output_proj.weight[EOS] = 1.0  # eos logit = sum(LayerNorm(y) + 1) = d > 0 = others
    assert greedy_decode(model, src, max_len=4) == [[], [], []]
    assert beam_search(model, src, beam_size=3, max_len=4) == [[], [], []]


def test_incremental_decoding_matches_full_decoding():
    model = random_model(3)
    src = torch.tensor([[5, 6, 7, EOS], [8, 9, EOS, PAD]])
    tgt = torch.tensor([[BOS, 4, 5, 6, 7], [BOS, 9, 8, 10, 11]])
    with torch.no_grad():
        memory, src_mask = model.encode(src)
        full = model.decode(tgt, memory, src_mask)
        cache = {}
        steps = [model.decode(tgt[:, :2], memory, src_mask, cache)]  # a 2-token first chunk
        steps += [model.decode(tgt[:, t : t + 1], memory, src_mask, cache) for t in range(2, 5)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_source_padding_does_not_change_outputs():
    model = random_model(4)
    short = torch.tensor([[5, 6, EOS]])
    long = torch.tensor([[7, 8, 9, 10, 11, EOS]])
    tgt = torch.tensor([[BOS, 4, 9]])
    with torch.no_grad():
        alone = model(short, tgt)
        padded_src = torch.cat([torch.cat([short, torch.full((1, 3), PAD)], dim=1), long])
        together = model(padded_src, torch.cat([tgt, tgt]))
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[1], alone[0], atol=1e-3)  # the other sentence differs


def test_decoder_is_causal():
    model = random_model(5)
    src = torch.tensor([[5, 6, 7, EOS]])
    tgt = torch.tensor([[BOS, 4, 5, 6, 7]])
    changed = tgt.clone()
    changed[0, 3] = 11
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:], atol=1e-3)


def test_projection_names_and_weight_tying():
    model = random_model(6)
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "output_proj"}
    assert model.output_proj.weight is model.src_embed.weight is model.tgt_embed.weight
    untied = random_model(6, share_embeddings=False)
    assert untied.output_proj.weight is not untied.tgt_embed.weight
    assert untied.src_embed.weight is not untied.tgt_embed.weight
    with pytest.raises(ValueError, match="max_len=16"):
        model(torch.tensor([[5, EOS]]), torch.full((1, 17), 4))


def test_label_smoothed_cross_entropy_by_hand():
    torch.manual_seed(7)
    logits = torch.randn(2, 3, 5, dtype=torch.float64)
    target = torch.tensor([[1, 4, PAD], [3, PAD, PAD]])
    logp = torch.log_softmax(logits, dim=-1)
    real = [(0, 0), (0, 1), (1, 0)]
    nll = sum(-logp[b, t, target[b, t]] for b, t in real) / 3
    uniform = sum(-logp[b, t].mean() for b, t in real) / 3
    eps = 0.1
    got = label_smoothed_cross_entropy(logits, target, PAD, eps)
    torch.testing.assert_close(got, ((1 - eps) * nll + eps * uniform).float())
    torch.testing.assert_close(label_smoothed_cross_entropy(logits, target, PAD), nll.float())
