import pytest
import torch

from sst.spectral.functional import SAMPLING_MODES, complement, sample_indices, sampling_probabilities


def test_multinomial_probabilities_follow_the_formula():
    S = torch.tensor([4.0, 3.0, 2.0, 1.0])
    p = sampling_probabilities(S, "multinomial")
    expected = 0.5 * (1 / 4 + S / S.sum())
    torch.testing.assert_close(p, expected.double())
    assert abs(float(p.sum()) - 1) < 1e-12
    torch.testing.assert_close(sampling_probabilities(S, "proportional"), (S / S.sum()).double())
    torch.testing.assert_close(sampling_probabilities(S, "uniform"), torch.full((4,), 0.25, dtype=torch.float64))


def test_zero_spectrum_falls_back_to_uniform():
    p = sampling_probabilities(torch.zeros(5), "proportional")
    torch.testing.assert_close(p, torch.full((5,), 0.2, dtype=torch.float64))


@pytest.mark.parametrize("mode", SAMPLING_MODES)
def test_sampling_returns_r_distinct_sorted_indices(mode):
    S = torch.rand(20)
    gen = torch.Generator().manual_seed(0)
    for it in range(10):
        idx = sample_indices(S, 6, mode, gen, iteration=it)
        assert idx.numel() == 6 and torch.unique(idx).numel() == 6
        assert torch.equal(idx, torch.sort(idx).values)
        assert int(idx.min()) >= 0 and int(idx.max()) < 20


def test_frequency_rises_with_singular_value():
    S = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5, 0.1, 0.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(8)
    for _ in range(3000):
        counts[sample_indices(S, 2, "multinomial", gen)] += 1
    assert torch.all(counts[:-3] >= counts[1:-2])  # monotone down the spectrum (excluding ties at 0)
    assert counts[0] > 1.5 * counts[3]
    assert counts[-1] > 0  # the uniform floor reaches zero singular values too


def test_top_and_sequential_are_deterministic():
    S = torch.tensor([0.5, 3.0, 1.0, 2.0, 0.1])
    assert sample_indices(S, 2, "top").tolist() == [1, 3]
    assert sample_indices(S, 2, "top").tolist() == [1, 3]
    # descending order is [1, 3, 2, 0, 4]; blocks of 2 cycle through it
    assert sample_indices(S, 2, "sequential", iteration=0).tolist() == [1, 3]
    assert sample_indices(S, 2, "sequential", iteration=1).tolist() == [0, 2]
    assert sample_indices(S, 2, "sequential", iteration=2).tolist() == [1, 4]
    # a given order is walked as it is, whatever S says now
    order = torch.tensor([4, 3, 2, 1, 0])
    blocks = [sample_indices(S, 2, "sequential", iteration=i, order=order).tolist() for i in range(3)]
    assert blocks == [[3, 4], [1, 2], [0, 4]]


def test_seeded_generator_reproduces_draws():
    S = torch.rand(30)
    a = [sample_indices(S, 5, "multinomial", torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(a[0], a[1])


def test_unknown_mode_and_bad_rank():
    with pytest.raises(ValueError, match="unknown sampling mode 'random'"):
        sample_indices(torch.rand(5), 2, "random")
    with pytest.raises(ValueError, match=r"rank must be in \[1, 5\]"):
        sample_indices(torch.rand(5), 6, "uniform")


def test_complement():
    assert complement(torch.tensor([0, 3]), 5).tolist() == [1, 2, 4]
