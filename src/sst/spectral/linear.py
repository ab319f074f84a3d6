"""SpectralLinear: a linear layer kept in SVD form, y = x (U diag(S) Vh)^T + b.

U (out, k) and Vh (k, in) are stored as an active part (r columns / rows: the only trainable
vectors) and a frozen part (k - r, buffers); S (k,) is trained in full and stored in the same slot
order ([active | frozen]), so the forward pass needs no gather. ``active_idx`` / ``frozen_idx`` give
the canonical index of each slot. Re-sampling copies values between tensors of fixed identity:
no Parameter is ever created or toggled after construction (DDP/FSDP, compile, exact resume);
under FSDP2 the structural events run on gathered layers (``sst.shards.gathered``).
"""

from __future__ import annotations

import torch
from torch import nn

from sst.spectral.factored import FactoredLinear
from sst.spectral.functional import (
    SamplingMode,
    compose,
    complement,
    match_components,
    robust_svd,
    sample_indices,
)
from sst.spectral.products import ProductMode, compose_split, spectral_product


class SpectralLinear(FactoredLinear):
    """Drop-in replacement for ``nn.Linear(in_features, out_features)`` with rank-r trainable vectors.

    Parameters: ``U_active`` (out, r), ``Vh_active`` (r, in), ``S`` (k,) in slot order (the first
    r values belong to the active vectors), ``bias`` (out,) or None.
    Buffers: ``U_frozen`` (out, k - r), ``Vh_frozen`` (k - r, in), ``active_idx`` (r,) and
    ``frozen_idx`` (k - r,) canonical indices of the slots, ``iteration`` (iterations since re-SVD).
    ``frozen_dtype`` stores the frozen buffers in a lower precision (bf16 halves the layer's
    largest tensors); S and the active vectors keep ``dtype``. ``product`` picks how the forward
    evaluates x W^T (``sst.spectral.products``); no mode keeps W alive for backward.
    ``all_singular_values=False`` (an ablation) trains only the r active values of S: the frozen
    slots get no gradient (the optimizer step may still move them through weight decay or stale
    moments; ``SSTMethod`` restores them after each step).
    ``sharded_buffers``: under FSDP2 the frozen factors become frozen parameters (same keys) so
    that they are sharded like the rest.
    """

    sharded_buffers: tuple[str, ...] = ("U_frozen", "Vh_frozen")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        use_bias: bool = True,
        enhanced_gradient: bool = True,
        eps: float = 1e-8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        frozen_dtype: torch.dtype | None = None,
        product: ProductMode = "auto",
        all_singular_values: bool = True,
    ):
        super().__init__()
        k = min(in_features, out_features)
        if not isinstance(rank, int) or not 0 < rank <= k:
            raise ValueError(
                f"rank must be an integer in [1, min(in, out) = {k}] for a "
                f"{out_features}x{in_features} layer, got {rank!r}"
            )
        self.in_features, self.out_features, self.rank, self.k = in_features, out_features, rank, k
        self.enhanced_gradient = enhanced_gradient
        self.eps = eps
        self.product = product
        self.all_singular_values = all_singular_values
        kw = {"device": device, "dtype": dtype}
        self.U_active = nn.Parameter(torch.empty(out_features, rank, **kw))
        self.Vh_active = nn.Parameter(torch.empty(rank, in_features, **kw))
        self.S = nn.Parameter(torch.empty(k, **kw))
        self.bias = nn.Parameter(torch.zeros(out_features, **kw)) if use_bias else None
        frozen = {"device": device, "dtype": frozen_dtype or dtype}
        self.register_buffer("U_frozen", torch.empty(out_features, k - rank, **frozen))
        self.register_buffer("Vh_frozen", torch.empty(k - rank, in_features, **frozen))
        long = {"device": device, "dtype": torch.long}
        self.register_buffer("active_idx", torch.arange(rank, **long))
        self.register_buffer("frozen_idx", torch.arange(rank, k, **long))
        self.register_buffer("iteration", torch.zeros((), **long))

    # ---------------------------------------------------------------- construction and export

    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        rank: int,
        sampling: SamplingMode = "multinomial",
        generator: torch.Generator | None = None,
        svd_dtype: torch.dtype = torch.float32,
        **kwargs,
    ) -> "SpectralLinear":
        """Factor ``linear.weight`` (out, in) by SVD; the new layer computes the same function."""
        weight = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            rank,
            use_bias=linear.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
            **kwargs,
        )
        if weight.is_meta:
            return layer
        found = robust_svd(weight, svd_dtype)
        if found is None:
            raise ValueError(
                f"cannot factor a {tuple(weight.shape)} weight: it holds NaN/inf or its SVD does not "
                "converge (even in float64)"
            )
        layer.load_factors_(*found)
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        layer.sample_(sampling, generator)
        return layer

    def dense_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W = U diag(S) Vh (out, in): the forward's ``weight()``, or with ``dtype`` recomposed
        from the canonical ``factors()`` in that precision (detached)."""
        if dtype is None:
            return self.weight()
        U, S, Vh = self.factors()
        return compose(U.to(dtype), S.to(dtype), Vh.to(dtype))

    # ---------------------------------------------------------------- views of the factors

    @property
    def perm(self) -> torch.Tensor:
        """Canonical index of each stored slot: [active_idx, frozen_idx] -> (k,)."""
        return torch.cat([self.active_idx, self.frozen_idx])

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detached U (out, k), S (k,), Vh (k, in) in canonical order."""
        perm = self.perm
        U = torch.empty(self.out_features, self.k, dtype=self.S.dtype, device=self.S.device)
        Vh = torch.empty(self.k, self.in_features, dtype=self.S.dtype, device=self.S.device)
        S = torch.empty_like(self.S, requires_grad=False)
        with torch.no_grad():
            U[:, perm] = torch.cat([self.U_active, self.U_frozen.to(U.dtype)], dim=1)
            Vh[perm] = torch.cat([self.Vh_active, self.Vh_frozen.to(Vh.dtype)], dim=0)
            S[perm] = self.S
        return U, S, Vh

    def weight(self) -> torch.Tensor:
        """The dense weight (out, in), differentiable (plain gradient) w.r.t. U_active, Vh_active, S."""
        return compose_split(self.U_active, self.S, self.Vh_active, self.U_frozen, self.Vh_frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out), with the (enhanced) spectral gradient of ``SpectralProduct``."""
        S = self.S
        if not self.all_singular_values:  # frozen slots [r:] take no gradient
            S = torch.cat([S[: self.rank], S[self.rank:].detach()])
        return spectral_product(
            x, self.U_active, S, self.Vh_active, self.U_frozen, self.Vh_frozen, self.bias,
            self.enhanced_gradient, self.eps, self.product,
        )

    def trainable_count(self) -> int:
        """r (out + in) + k (+ out for the bias): the spec's per-layer trainable size."""
        bias = self.out_features if self.bias is not None else 0
        return self.rank * (self.out_features + self.in_features) + self.k + bias

    # ---------------------------------------------------------------- structural events

    @torch.no_grad()
    def load_factors_(self, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> None:
        """Store canonical factors U (out, k), S (k,), Vh (k, in), keeping the active index set."""
        self.S.copy_(S[self.perm])
        self.U_active.copy_(U[:, self.active_idx])
        self.U_frozen.copy_(U[:, self.frozen_idx])
        self.Vh_active.copy_(Vh[self.active_idx])
        self.Vh_frozen.copy_(Vh[self.frozen_idx])

    @torch.no_grad()
    def set_active_(self, indices: torch.Tensor) -> torch.Tensor:
        """Make canonical ``indices`` (r,) the trainable vectors; the function is unchanged.

        Returns the slot permutation ``moved`` (k,) with S_new = S_old[moved], so that per-slot
        state (e.g. the optimizer moments of S) can follow its singular value.
        """
        indices = torch.as_tensor(indices, dtype=torch.long, device=self.S.device)
        if indices.numel() != self.rank or torch.unique(indices).numel() != self.rank:
            raise ValueError(f"need {self.rank} distinct indices, got {indices.tolist()}")
        if int(indices.min()) < 0 or int(indices.max()) >= self.k:
            raise ValueError(f"indices must lie in [0, {self.k}), got {indices.tolist()}")
        U, S, Vh = self.factors()
        old_slot = torch.empty(self.k, dtype=torch.long, device=self.S.device)  # canonical -> old slot
        old_slot[self.perm] = torch.arange(self.k, device=self.S.device)
        self.active_idx.copy_(torch.sort(indices).values)
        self.frozen_idx.copy_(complement(self.active_idx, self.k))
        self.load_factors_(U, S, Vh)
        return old_slot[self.perm]

    def sample_(
        self, mode: SamplingMode = "multinomial", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw a new active set (see ``sample_indices``) and advance ``iteration``.

        ``sequential`` walks the canonical indices in blocks: the SVD at conversion and at each
        re-SVD numbers them in descending-S order and nothing renumbers them in between, so the
        order stays fixed for the whole round (and is saved with ``active_idx`` / ``frozen_idx``)
        however S changes. Returns the slot permutation of ``set_active_``.
        """
        _, S, _ = self.factors()
        order = torch.arange(self.k)
        moved = self.set_active_(sample_indices(S, self.rank, mode, generator, int(self.iteration), order))
        with torch.no_grad():
            self.iteration += 1
        return moved

    @torch.no_grad()
    def resvd_(self, svd_dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        """Re-orthogonalise: U, S, Vh <- svd(U diag(S) Vh); the function is unchanged.

        The SVD renumbers the components in descending-S order. Returns the slot permutation
        ``moved`` (k,) that maps each new singular value to the old slot of the component it
        continues (largest overlap, see ``match_components``): per-slot state indexed
        state[moved] follows its singular value, as after ``set_active_``. Returns None, with
        the factors untouched, when the SVD fails in ``svd_dtype`` and in float64 (``robust_svd``).
        """
        U, S, Vh = (t.to(torch.promote_types(svd_dtype, self.S.dtype)) for t in self.factors())
        found = robust_svd(compose(U, S, Vh), U.dtype)
        if found is None:
            return None
        U2, S2, Vh2 = (t.to(U.dtype) for t in found)
        continues = match_components(U, Vh, U2, Vh2)  # new canonical -> old canonical
        slot = torch.argsort(self.perm)  # canonical -> slot; the active index set is kept
        self.load_factors_(U2.to(self.S.dtype), S2.to(self.S.dtype), Vh2.to(self.S.dtype))
        self.iteration.zero_()
        return slot[continues[self.perm]]

    @torch.no_grad()
    def project_(self, normalize_vectors: bool = True) -> None:
        """After an optimizer step: S <- max(S, 0); active vectors rescaled to unit norm."""
        project_all_([self], normalize_vectors)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}, k={self.k}, bias={self.bias is not None}"
            + (f", frozen_dtype={self.U_frozen.dtype}" if self.U_frozen.dtype != self.S.dtype else "")
        )


@torch.no_grad()
def project_all_(layers: list[SpectralLinear], normalize_vectors: bool = True) -> None:
    """``project_`` for many layers with one foreach kernel per operation (not one per layer):
    S <- max(S, 0); U_active columns and Vh_active rows divided by max(norm, eps), with
    the first layer's eps (a method's layers share one config)."""
    if not layers:
        return
    torch._foreach_clamp_min_([layer.S for layer in layers], 0.0)
    if not normalize_vectors:
        return
    vectors = [t for layer in layers for t in (layer.U_active, layer.Vh_active)]
    norms = [t for layer in layers for t in (layer.U_active.norm(dim=0, keepdim=True),
                                             layer.Vh_active.norm(dim=1, keepdim=True))]
    torch._foreach_clamp_min_(norms, layers[0].eps)
    torch._foreach_div_(vectors, norms)
