"""HyboNet graph convolutional network in the Lorentz model (Chen et al. 2022).

h^0 = expmap0([0, features]); h^{l+1} = centroid over {i} + N(i) of LorentzLinear_l(h^l)
(layers after the first apply ReLU to their input point). Heads: node classification by a Euclidean
``nn.Linear`` named ``classifier`` on logmap0(h) (choice), link prediction by the Fermi-Dirac decoder
p(u ~ v) = 1 / (exp((d_L^2(h_u, h_v) - r) / t) + 1) on the squared Lorentz distance.
"""

from __future__ import annotations

import torch
from torch import nn

from sst.errors import ConfigError

from sst.hyperbolic import math as hm
from sst.hyperbolic.layers import LorentzAggregation, LorentzLinear


class HyboNetGCN(nn.Module):
    """Fully hyperbolic GCN: n_layers of (LorentzLinear -> LorentzAggregation).

    Args:
        in_features: Euclidean input feature size f.
        hidden: manifold dimension of every layer (points have hidden + 1 coordinates).
        n_classes: number of classes; 0 builds no ``classifier`` (link prediction only).
        fd_r, fd_t: Fermi-Dirac radius and temperature for ``edge_logits``.
    The only projections are the ``layers.<i>.linear`` (hyperbolic, inner nn.Linear) and the
    Euclidean ``classifier``; method surgery should target ``*.linear`` and leave ``classifier``
    dense, like an LM head.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 16,
        n_classes: int = 0,
        n_layers: int = 2,
        K: float = 1.0,
        dropout: float = 0.0,
        use_bias: bool = True,
        fd_r: float = 2.0,
        fd_t: float = 1.0,
    ):
        super().__init__()
        hm.check_curvature(K)
        if n_layers < 1:
            raise ConfigError(f"HyboNetGCN: n_layers must be >= 1, got {n_layers}")
        if fd_t <= 0:
            raise ConfigError(f"HyboNetGCN: Fermi-Dirac temperature fd_t must be > 0, got {fd_t}")
        self.K, self.fd_r, self.fd_t = K, fd_r, fd_t
        dims = [in_features] + [hidden] * n_layers
        self.layers = nn.ModuleList(
            LorentzLinear(
                dims[i], dims[i + 1], K=K, use_bias=use_bias, dropout=dropout,
                activation=nn.ReLU() if i > 0 else None,
            )
            for i in range(n_layers)
        )
        self.aggregate = LorentzAggregation(K)
        self.classifier = nn.Linear(hidden, n_classes) if n_classes > 0 else None

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """Euclidean features (n, f) -> points (n, f + 1) via expmap0 of the tangent vector [0, x]."""
        pad = torch.zeros_like(features[..., :1])
        return hm.expmap0(torch.cat([pad, features], dim=-1), self.K)

    def encode(self, features: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """features: (n, f), edge_index: (2, E) both directions -> node embeddings (n, hidden + 1)."""
        h = self.embed_features(features)
        for layer in self.layers:
            h = self.aggregate(layer(h), edge_index)
        return h

    def forward(
        self, features: torch.Tensor, edge_index: torch.Tensor, pairs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Node logits (n, n_classes), or with ``pairs`` (2, P) Fermi-Dirac edge logits (P,).

        Everything a loss needs goes through forward, so wrappers (DDP, torch.compile) see it.
        """
        h = self.encode(features, edge_index)
        return self.node_logits(h) if pairs is None else self.edge_logits(h, pairs)

    def node_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Embeddings (n, hidden + 1) -> class logits (n, n_classes) from the tangent space at o."""
        if self.classifier is None:
            raise RuntimeError("HyboNetGCN was built with n_classes=0: no node classifier")
        return self.classifier(hm.logmap0(h, self.K)[..., 1:])

    def edge_logits(self, h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Embeddings (n, hidden + 1), node pairs (2, P) -> Fermi-Dirac logits (P,).

        sigmoid(logit) = 1 / (exp((d - r) / t) + 1) with d the squared Lorentz distance; returning
        the logit (r - d) / t lets the loss use the stable BCE-with-logits form.
        """
        d = hm.sq_dist(h[pairs[0]], h[pairs[1]], self.K)
        return (self.fd_r - d) / self.fd_t

    def edge_probs(self, h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Fermi-Dirac edge probabilities (P,)."""
        return torch.sigmoid(self.edge_logits(h, pairs))
