"""Fira (arXiv 2410.01623): GaLore's projected Adam plus the scaled out-of-subspace gradient.

For a target gradient G (m, n) with GaLore projector P: R = proj(G) (m, r) or (r, n), psi(R) Adam's
direction for R, and the update  W <- W - lr_t (scale back(psi(R)) + S_t)  with the residual term
S_t = phi (G - back(R)): norm-based scaling phi_i = ||psi(R)_i|| / ||R_i||, one factor per row of R
along its long side. The norm-growth limiter caps ||S_t|| at gamma ||S_{t-1}|| (gamma = 1.01).
"""

from __future__ import annotations

import math

import torch

from sst.optim.galore import GaLoreAdamW, begin_step, project_back

# The authors' fixed guard for both norm ratios (phi and the limiter), kept so that a zero row
# of R or a zero previous residual gives a finite factor rather than a division by zero.
NORM_EPS = 1e-8


def scaled_residual(
    grad: torch.Tensor, low: torch.Tensor, direction: torch.Tensor, P: torch.Tensor
) -> torch.Tensor:
    """phi (G - back(R)) -> (m, n) for G (m, n), R = ``low`` and psi(R) = ``direction`` of R's shape.

    The factors phi compare each row of psi(R) with the same row of R, taken along the long side
    of G: R (m, r) for m >= n (one factor per row of G), R (r, n) otherwise (one per column).
    """
    m, n = grad.shape
    dim = 1 if m >= n else 0
    phi = direction.norm(dim=dim, keepdim=True) / (low.norm(dim=dim, keepdim=True) + NORM_EPS)
    return (grad - project_back(low, P, grad.shape)) * phi


def limit_growth(term: torch.Tensor, state: dict, gamma: float) -> torch.Tensor:
    """``term`` rescaled so that its norm grows by at most ``gamma`` over the previous step's.

    ``state["residual_norm"]`` (a 0-dim tensor) holds the previous, already limited norm; the
    first step sets it. The ratio stays a tensor: no device synchronisation.
    """
    norm = term.norm()
    if "residual_norm" in state:
        factor = torch.clamp(norm / (state["residual_norm"] + NORM_EPS), min=gamma) / gamma
        term, norm = term / factor, norm / factor
    state["residual_norm"] = norm
    return term


class FiraAdamW(GaLoreAdamW):
    """GaLoreAdamW whose projected groups take Fira's step (the projection plus the residual).

    Group options: ``rank`` (None: plain Adam for that group), ``proj_update_every``, ``scale``
    (on the projected part only), ``limiter_gamma``. Adam is computed as the authors' FiraAdamW
    computes it, so that trajectories agree with it: psi = m / (sqrt(v) + eps), bias corrections
    folded into the step size lr sqrt(1 - beta2^t) / (1 - beta1^t), and decoupled weight decay
    applied after the update. State: ``step`` (int), ``exp_avg``/``exp_avg_sq`` (projected shape),
    ``projector`` and ``residual_norm`` for projected matrices; tensors and ints only.
    """

    def __init__(self, params, scale: float = 1.0, limiter_gamma: float = 1.01, **adam):
        """``adam``: lr, betas, eps, weight_decay, rank, proj_update_every, as for GaLoreAdamW."""
        if limiter_gamma < 1.0:
            raise ValueError(f"limiter_gamma must be >= 1 (the allowed growth of the residual), got {limiter_gamma}")
        super().__init__(params, scale=scale, **adam)
        self.defaults["limiter_gamma"] = limiter_gamma  # for groups added later
        for group in self.param_groups:
            group.setdefault("limiter_gamma", limiter_gamma)

    def update_parameter(self, p: torch.Tensor, group: dict, state: dict) -> None:
        """One Fira step of ``p``: scale back(psi(R)) + limited phi (G - back(R)), or plain Adam."""
        beta1, beta2 = group["betas"]
        grad, low, projected = begin_step(p, group, state)
        t = state["step"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(beta1).add_(low, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(low, low, value=1 - beta2)
        update = exp_avg / exp_avg_sq.sqrt().add_(group["eps"])
        if projected:
            P = state["projector"]
            residual = limit_growth(scaled_residual(grad, low, update, P), state, group["limiter_gamma"])
            update = group["scale"] * project_back(update, P, p.shape) + residual
        step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        p.add_(update.to(p.dtype), alpha=-step_size)
        if group["weight_decay"]:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])
