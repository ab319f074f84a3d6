"""The spectral product y = x W^T + b with W = U_a diag(S_a) Vh_a + U_f diag(S_f) Vh_f.

Two evaluation orders, chosen for the forward and the backward pass separately, and neither keeps
W alive for backward (only x and the factors are saved). With t rows of x, m = out, n = in,
k = min(m, n), r active vectors, the multiply-adds are
  forward:  dense (compose W, then x W^T) m n (t + k);   thin ((x Vh^T) S) U^T  t k (m + n)
  backward: dense (dW = G^T x; dS, dU, dVh from dW; W composed again for dx = G W)  2 t m n + 2 m n k
            thin (G U, x Vh^T, dx = (G U S) Vh, never W)  t k (m + 2 n) + t r (m + n)
and ``auto`` takes the cheaper order of each pass (``choose_orders``).
"""

from __future__ import annotations

from typing import Literal

import torch

ProductMode = Literal["auto", "dense", "thin"]
PRODUCT_MODES: tuple[str, ...] = ("auto", "dense", "thin")


def choose_orders(
    mode: ProductMode, rows: int, out_features: int, in_features: int, rank: int
) -> tuple[str, str]:
    """(forward, backward) order, each ``dense`` or ``thin``, for ``rows`` rows of x through an
    (out, in) layer with ``rank`` active vectors (the cost model above; ``mode`` forces both)."""
    if mode != "auto":
        return mode, mode
    t, m, n, r = rows, out_features, in_features, rank
    k = min(m, n)
    forward = "thin" if t * k * (m + n) < m * n * (t + k) else "dense"
    backward = "thin" if t * k * (m + 2 * n) + t * r * (m + n) < 2 * t * m * n + 2 * m * n * k else "dense"
    return forward, backward


def choose_product(mode: ProductMode, rows: int, out_features: int, in_features: int) -> str:
    """The forward order alone (see ``choose_orders``)."""
    return choose_orders(mode, rows, out_features, in_features, 1)[0]


def compose_split(
    U_a: torch.Tensor, S: torch.Tensor, Vh_a: torch.Tensor, U_f: torch.Tensor, Vh_f: torch.Tensor
) -> torch.Tensor:
    """W (out, in) from the active U_a (out, r), Vh_a (r, in), frozen U_f (out, k-r), Vh_f (k-r, in)
    and S (k,) in slot order; frozen factors stored in a lower precision are raised to S's dtype."""
    r = U_a.shape[1]
    W = (U_a * S[:r]) @ Vh_a
    if U_f.shape[1]:
        US = U_f * S[r:]  # type promotion raises a bf16 U_f to S's dtype in this one product
        W = torch.addmm(W, US.to(W.dtype), Vh_f.to(W.dtype))
    return W


def _scale(S_a: torch.Tensor, enhanced: bool, eps: float) -> torch.Tensor:
    # Enhanced gradient: dU_a, dVh_a divided by |S_a| + eps, so the factor S_i / (|S_i| + eps) is
    # about 1 for S_i >> eps and 0 for a vector whose singular value was clamped to 0.
    return S_a / (S_a.abs() + eps) if enhanced else S_a


class SpectralProduct(torch.autograd.Function):
    """y (..., out) = x (..., in) W^T + b, saving x and the factors (never W) for backward.

    Gradients, with G = dL/dy flattened to (t, out) and x to (t, in), dW = G^T x:
    dS_i = U_i^T dW Vh_i^T for every i; dU_a = dW Vh_a^T diag(c) and dVh_a = diag(c) U_a^T dW
    with c = S_a (or S_a / (|S_a| + eps), the enhanced gradient); dx = G W; db = sum_t G.
    Matmuls run in G's dtype (bf16 under autocast); the reductions that give dS accumulate in
    float32 so small singular-value gradients are not rounded away.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, U_a, S, Vh_a, U_f, Vh_f, bias, enhanced: bool, eps: float, mode: str):
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        r = U_a.shape[1]
        forward, backward = choose_orders(mode, rows, U_a.shape[0], Vh_a.shape[1], r)
        if forward == "thin":
            dt = x.dtype  # under autocast the matmuls cast to bf16 on their own
            h_a = x @ Vh_a.T  # (..., r)
            y = (h_a * S[:r]) @ U_a.T
            if U_f.shape[1]:
                h_f = x @ Vh_f.to(dt).T  # (..., k - r)
                y = y + (h_f * S[r:].to(h_f.dtype)) @ U_f.to(dt).T
            if bias is not None:
                y = y + bias.to(y.dtype)
        else:
            y = torch.nn.functional.linear(x, compose_split(U_a, S, Vh_a, U_f, Vh_f), bias)
        ctx.save_for_backward(x, U_a, S, Vh_a, U_f, Vh_f)
        ctx.has_bias, ctx.enhanced, ctx.eps, ctx.thin = bias is not None, enhanced, eps, backward == "thin"
        return y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, G):
        x, U_a, S, Vh_a, U_f, Vh_f = ctx.saved_tensors
        r = U_a.shape[1]
        low, acc = G.dtype, torch.promote_types(S.dtype, torch.float32)
        G2 = G.reshape(-1, G.shape[-1])  # (t, out)
        x2 = x.reshape(-1, x.shape[-1]).to(low)  # (t, in)
        frozen = U_f.shape[1] > 0
        c = _scale(S[:r], ctx.enhanced, ctx.eps)
        if ctx.thin:
            gz_a = G2 @ U_a.to(low)  # (t, r)
            h_a = x2 @ Vh_a.to(low).T  # (t, r)
            dS_a = (gz_a.to(acc) * h_a.to(acc)).sum(0)
            dU = (G2.T @ h_a) * c.to(low)  # (out, r)
            dVh = (gz_a.T @ x2) * c.to(low)[:, None]  # (r, in)
            dx = (gz_a * S[:r].to(low)) @ Vh_a.to(low)
            if frozen:
                gz_f = G2 @ U_f.to(low)
                h_f = x2 @ Vh_f.to(low).T
                dS_f = (gz_f.to(acc) * h_f.to(acc)).sum(0)
                dx = dx + (gz_f * S[r:].to(low)) @ Vh_f.to(low)
        else:
            dW = G2.T @ x2  # (out, in)
            GV = dW @ Vh_a.T.to(low)  # (out, r)
            UG = U_a.T.to(low) @ dW  # (r, in)
            dS_a = (U_a.to(acc) * GV.to(acc)).sum(0)
            if frozen:
                dS_f = ((U_f.T.to(low) @ dW).to(acc) * Vh_f).sum(1)  # Vh_f promoted, not copied
            dU, dVh = GV * c.to(low), UG * c.to(low)[:, None]
            dx = None
            if ctx.needs_input_grad[0]:
                dx = G2 @ compose_split(U_a, S, Vh_a, U_f, Vh_f).to(low)  # W again, not kept
        dS = torch.cat([dS_a, dS_f if frozen else dS_a.new_zeros(0)]).to(S.dtype)
        db = G2.sum(0, dtype=acc) if ctx.has_bias else None
        if dx is not None:
            dx = dx.reshape(x.shape).to(x.dtype)
        return (dx, dU.to(U_a.dtype), dS, dVh.to(Vh_a.dtype), None, None, db, None, None, None)


def spectral_product(
    x: torch.Tensor,
    U_a: torch.Tensor,
    S: torch.Tensor,
    Vh_a: torch.Tensor,
    U_f: torch.Tensor,
    Vh_f: torch.Tensor,
    bias: torch.Tensor | None,
    enhanced: bool = True,
    eps: float = 1e-8,
    mode: ProductMode = "auto",
) -> torch.Tensor:
    """x (..., in) -> (..., out) through W = U diag(S) Vh in slot order (see ``SpectralProduct``)."""
    if mode not in PRODUCT_MODES:
        raise ValueError(f"unknown product mode {mode!r}; choose from {PRODUCT_MODES}")
    return SpectralProduct.apply(x, U_a, S, Vh_a, U_f, Vh_f, bias, enhanced, eps, mode)
