"""Pure functions of the spectral parametrisation W = U diag(S) Vh (torch only).

svd_factors takes the thin SVD in float32/float64 whatever the storage dtype (robust_svd retries a
failed one in float64); sampling_probabilities
and sample_indices choose which r singular vectors train during an iteration (SST-SPEC section 4);
match_components pairs the components of a re-SVD with the ones they continue.
"""

from __future__ import annotations

from typing import Literal

import torch

SamplingMode = Literal["multinomial", "proportional", "uniform", "sequential", "top"]
SAMPLING_MODES: tuple[str, ...] = ("multinomial", "proportional", "uniform", "sequential", "top")


def svd_factors(
    weight: torch.Tensor, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of ``weight`` (out, in) -> U (out, k), S (k,), Vh (k, in), k = min(out, in).

    Computed in ``dtype`` (float32 or float64: low-precision SVD loses orthogonality), or in
    float64 when the weight already is; S is non-negative and sorted in descending order.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"SVD dtype must be float32 or float64, got {dtype}")
    dtype = torch.promote_types(dtype, weight.dtype)
    U, S, Vh = torch.linalg.svd(weight.detach().to(dtype), full_matrices=False)
    return U, S, Vh


def robust_svd(
    weight: torch.Tensor, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``svd_factors`` that survives a failed SVD: retried in float64 when ``dtype`` does not
    converge or gives non-finite factors; None when the float64 SVD fails too (or ``weight``
    itself holds NaN/inf), so the caller keeps what it has instead of storing NaN."""
    if not bool(torch.isfinite(weight).all()):
        return None
    for attempt in dict.fromkeys((dtype, torch.float64)):
        try:
            factors = svd_factors(weight, attempt)
        except RuntimeError:  # torch.linalg.LinAlgError (no convergence) is a RuntimeError
            continue
        if all(bool(torch.isfinite(t).all()) for t in factors):
            return factors
    return None


def random_orthogonal_factors(
    out_features: int, in_features: int, scale: float, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Haar-random orthonormal U (out, k), Vh (k, in) and a flat spectrum S = scale (k,).

    The ablation of SVD initialisation: W = scale * U Vh has the same Frobenius norm as a dense
    weight whose singular values have root-mean-square ``scale``, but every direction is random
    and every singular value equal (as ``nn.init.orthogonal_``). Q of a Gaussian matrix's QR,
    with the signs of R's diagonal folded in, is Haar-distributed.
    """
    k = min(out_features, in_features)

    def haar(n: int) -> torch.Tensor:
        Q, R = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))
        return (Q * torch.sign(torch.diagonal(R)).unsqueeze(0)).to(dtype)

    return haar(out_features), torch.full((k,), float(scale), dtype=dtype), haar(in_features).T.contiguous()


def compose(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
    """U (out, k), S (k,), Vh (k, in) -> W = U diag(S) Vh (out, in)."""
    return (U * S.unsqueeze(0)) @ Vh


def sampling_probabilities(S: torch.Tensor, mode: SamplingMode) -> torch.Tensor:
    """Probability of activating each singular vector, S (k,) -> p (k,), summing to 1.

    multinomial: p_i = (1/k + S_i / sum S) / 2 (favours large values, keeps a uniform floor);
    proportional: p_i = S_i / sum S; uniform: p_i = 1/k. A zero spectrum falls back to uniform.
    """
    k = S.numel()
    S = S.detach().double().clamp(min=0)
    uniform = torch.full_like(S, 1.0 / k)
    total = S.sum()
    if mode == "uniform" or total <= 0:
        return uniform
    if mode == "multinomial":
        return 0.5 * (uniform + S / total)
    if mode == "proportional":
        return S / total
    raise ValueError(f"sampling mode {mode!r} has no probabilities; choose from {SAMPLING_MODES}")


def sample_indices(
    S: torch.Tensor,
    rank: int,
    mode: SamplingMode,
    generator: torch.Generator | None = None,
    iteration: int = 0,
    order: torch.Tensor | None = None,
) -> torch.Tensor:
    """Choose ``rank`` distinct indices of S (k,) to train next -> LongTensor (rank,), sorted.

    ``sequential`` walks cyclic blocks of ``rank`` through ``order`` (k,), the round's fixed
    visiting order (default: descending S now); ``iteration`` is the block number within the
    round, so ceil(k / rank) iterations visit every index. ``top`` takes the ``rank`` largest.
    """
    k = S.numel()
    if not 0 < rank <= k:
        raise ValueError(f"rank must be in [1, {k}], got {rank}")
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; choose from {SAMPLING_MODES}")
    S_cpu = S.detach().float().cpu()
    if mode == "top":
        idx = torch.topk(S_cpu, rank).indices
    elif mode == "sequential":
        if order is None:
            order = torch.argsort(S_cpu, descending=True, stable=True)
        idx = order.cpu()[(iteration * rank + torch.arange(rank)) % k]
    else:
        p = sampling_probabilities(S_cpu, mode)
        positive = int((p > 0).sum())
        if positive < rank:
            # proportional sampling with fewer than r non-zero values: add a tiny uniform floor
            # so that r distinct indices exist at all.
            p = p + 1e-12
        idx = torch.multinomial(p, rank, replacement=False, generator=generator)
    return torch.sort(idx).values.to(S.device)


def match_components(
    U_old: torch.Tensor, Vh_old: torch.Tensor, U_new: torch.Tensor, Vh_new: torch.Tensor
) -> torch.Tensor:
    """For each new rank-one component u'_j v'_j^T, the old one u_i v_i^T it continues -> (k,).

    U (out, k), Vh (k, in) for both. Overlap C_ij = |(u_i . u'_j)(v_i . v'_j)|, the cosine of the
    two components as matrices; new components (in their order, largest S first for an SVD) take
    the unclaimed old one of largest overlap, so the result is a permutation.
    """
    C = ((U_old.T @ U_new) * (Vh_old @ Vh_new.T)).abs()
    best = C.argmax(0)
    if torch.unique(best).numel() == best.numel():
        return best  # no two new components claim the same old one: the greedy result as well
    C = C.detach().double().cpu()
    match = torch.empty(C.shape[1], dtype=torch.long)
    for j in range(C.shape[1]):
        match[j] = C[:, j].argmax()
        C[match[j]] = -1.0
    return match.to(U_new.device)


def complement(indices: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted indices of range(k) not in ``indices`` -> LongTensor (k - len(indices),)."""
    mask = torch.ones(k, dtype=torch.bool, device=indices.device)
    mask[indices] = False
    return torch.nonzero(mask, as_tuple=False).flatten()


def orthonormality_error(Q: torch.Tensor, columns: bool = True) -> float:
    """max |Q^T Q - I| (columns) or |Q Q^T - I| (rows); 0 for an orthonormal set."""
    G = Q.T @ Q if columns else Q @ Q.T
    eye = torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    return float((G - eye).abs().max())
