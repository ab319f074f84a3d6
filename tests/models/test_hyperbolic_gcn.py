"""HyboNet GCN: embeddings on the hyperboloid, head shapes, Fermi-Dirac decoder, surgery names."""

import math

import pytest
import torch
from torch import nn

from sst.hyperbolic import math as hm
from sst.hyperbolic import validate_inputs
from sst.models.hyperbolic_gcn import HyboNetGCN


def star_graph(n=6):
    src = torch.zeros(n - 1, dtype=torch.long)
    dst = torch.arange(1, n)
    return torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])


@pytest.mark.parametrize("K", [0.5, 1.0, 2.0])
def test_embeddings_on_manifold_and_head_shapes(K):
    model = HyboNetGCN(in_features=5, hidden=8, n_classes=3, K=K, dropout=0.1)
    feats = torch.randn(6, 5) * 3
    with validate_inputs(True):  # every layer checks its input points
        h = model.encode(feats, star_graph())
    assert h.shape == (6, 9) and hm.is_on_manifold(h, K)
    assert model.node_logits(h).shape == (6, 3)
    pairs = torch.tensor([[0, 1], [2, 3]])
    logits = model.edge_logits(h, pairs)
    assert logits.shape == (2,)
    d = hm.sq_dist(h[[0, 1]], h[[2, 3]], K)
    expected = 1 / (torch.exp((d - model.fd_r) / model.fd_t) + 1)
    assert torch.allclose(model.edge_probs(h, pairs), expected, atol=1e-6)
    # forward gives the same heads (what losses call, so that DDP / compile wrappers see them)
    model.eval()
    h = model.encode(feats, star_graph())
    assert torch.allclose(model(feats, star_graph()), model.node_logits(h))
    assert torch.allclose(model(feats, star_graph(), pairs), model.edge_logits(h, pairs))


def test_embed_features_is_expmap0_of_padded_features():
    model = HyboNetGCN(in_features=3, n_classes=2)
    f = torch.tensor([[0.3, -0.4, 0.0]], dtype=torch.float64)
    x = model.embed_features(f)
    assert x[0, 0].item() == pytest.approx(math.cosh(0.5))
    assert torch.allclose(x[0, 1:], torch.tensor([0.3, -0.4, 0.0], dtype=torch.float64) * math.sinh(0.5) / 0.5)


def test_surgery_sees_inner_linears_and_classifier_by_name():
    model = HyboNetGCN(in_features=4, hidden=16, n_classes=2, n_layers=3)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert names == ["layers.0.linear", "layers.1.linear", "layers.2.linear", "classifier"]
    assert model.layers[0].linear.weight.shape == (17, 5)
    assert HyboNetGCN(in_features=4, n_classes=0).classifier is None
    with pytest.raises(RuntimeError, match="n_classes=0"):
        HyboNetGCN(in_features=4).node_logits(torch.zeros(1, 17))


def test_gradients_flow_and_invalid_arguments():
    model = HyboNetGCN(in_features=4, hidden=6, n_classes=2)
    model(torch.randn(6, 4), star_graph()).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.layers[0].linear.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="K must be > 0"):
        HyboNetGCN(in_features=4, K=-1.0)
    with pytest.raises(ValueError, match="fd_t"):
        HyboNetGCN(in_features=4, fd_t=0.0)
