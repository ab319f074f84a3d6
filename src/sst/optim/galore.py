"""GaLore: Adam in a low-rank projection of each target matrix's gradient.

For G (m, n) the projector P holds the top-r singular vectors of G on its smaller side:
right (P (n, r), low = G P) when m >= n, left (P (m, r), low = P^T G) otherwise. Adam's moments
live in the (m, r) or (r, n) space; the update is projected back and multiplied by ``scale``.
P is recomputed every ``proj_update_every`` steps; the moments are kept across updates. Under
FSDP2 each matrix is gathered for its step (its state is kept whole on every rank).
"""

from __future__ import annotations

import torch

from sst.shards import is_sharded, write_


def galore_projector(grad: torch.Tensor, rank: int) -> torch.Tensor:
    """Top-``rank`` singular vectors of grad (m, n) on its smaller side -> P (min-side, rank)."""
    U, _, Vh = torch.linalg.svd(grad.detach().float(), full_matrices=False)
    m, n = grad.shape
    return Vh[:rank].T.contiguous() if m >= n else U[:, :rank].contiguous()


def project(grad: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """G (m, n) -> low-rank G P (m, r) if m >= n else P^T G (r, n)."""
    m, n = grad.shape
    return grad @ P if m >= n else P.T @ grad


def project_back(low: torch.Tensor, P: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse map of ``project``: (m, r) -> (m, n) or (r, n) -> (m, n)."""
    m, n = shape
    return low @ P.T if m >= n else P @ low


def begin_step(p: torch.Tensor, group: dict, state: dict) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The shared start of a projected Adam step for ``p`` -> (G, R, projected).

    G is p's gradient in float32 and R its projection (G itself for a group without ``rank`` or a
    non-matrix). Refreshes ``state["projector"]`` every ``proj_update_every`` steps, creates the
    moments ``exp_avg``/``exp_avg_sq`` in R's shape, and counts ``state["step"]`` (now this step's).
    """
    grad = low = p.grad.float()
    projected = group["rank"] is not None and p.ndim == 2
    if not state:
        state["step"] = 0  # a Python int: reading it never waits for the GPU
    if projected:
        if "projector" not in state or state["step"] % group["proj_update_every"] == 0:
            state["projector"] = galore_projector(grad, group["rank"])
        low = project(grad, state["projector"])
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(low)
        state["exp_avg_sq"] = torch.zeros_like(low)
    state["step"] += 1
    return grad, low, projected


class GaLoreAdamW(torch.optim.Optimizer):
    """AdamW where parameter groups with ``rank`` set are trained in GaLore's projected space.

    Group options: ``rank`` (None: plain AdamW for that group), ``proj_update_every``, ``scale``.
    State per projected parameter: ``step``, ``exp_avg``/``exp_avg_sq`` of the projected shape,
    ``projector`` (min-side, rank); tensors and ints, so the state saves with weights_only loading.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        rank: int | None = None,
        proj_update_every: int = 200,
        scale: float = 0.25,
    ):
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
            rank=rank, proj_update_every=proj_update_every, scale=scale,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not is_sharded(p) or group["rank"] is None or p.ndim != 2:
                    self.update_parameter(p, group, self.state[p])
                    continue
                # FSDP2: a projector needs the SVD of the whole gradient; one matrix at a time
                # is gathered, stepped as on one device (its state whole, the same on every
                # rank) and its own rows written back.
                whole = p.full_tensor()
                whole.grad = p.grad.full_tensor()
                self.update_parameter(whole, group, self.state[p])
                write_(p, whole)
        return loss

    def update_parameter(self, p: torch.Tensor, group: dict, state: dict) -> None:
        """One step of ``p`` (its gradient is set): Adam in the projected space, projected back."""
        beta1, beta2 = group["betas"]
        _, grad, projected = begin_step(p, group, state)
        t = state["step"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq / (1 - beta2**t)).sqrt_().add_(group["eps"])
        update = (exp_avg / (1 - beta1**t)) / denom
        if projected:
            update = group["scale"] * project_back(update, state["projector"], p.shape)
        if group["weight_decay"]:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update.to(p.dtype), alpha=-group["lr"])
