"""Sparse Spectral Training: every target layer in SVD form, all S and r sampled vectors train.

Every ``resample_every`` steps (an iteration) each layer writes its active vectors back, samples
r new ones, and the optimizer moments of the active tensors (and of S, by default) are zeroed; the
LR re-warms over ``restart_warmup_steps``. After ``round_every`` iterations (default ceil(k / r))
a layer is re-orthogonalised by an SVD of U diag(S) Vh; with ``stagger_resvd`` the layers' rounds
are offset (layer j's first round is j mod T2 iterations shorter) so that no step pays for every
layer's SVD. See SST-SPEC sections 2-4.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from sst.errors import warn
from sst.methods.base import MethodConfig, TrainingMethod, broadcast_tensors, require_finite, restart_warmup
from sst.schema import check_range
from sst.methods.surgery import check_rank, find_targets, replace_modules
from sst.optim.moments import permute_state, reset_state
from sst.spectral.functional import SamplingMode, random_orthogonal_factors
from sst.spectral.linear import SpectralLinear, project_all_
from sst.spectral.products import ProductMode
from sst.shards import gathered, one_at_a_time


@dataclass
class SSTConfig(MethodConfig):
    interval_key: ClassVar[str | None] = "resample_every"
    role: ClassVar[str] = "subject"

    name: str = "sst"
    rank: int = 8
    resample_every: int = 200  # T3: optimizer steps per iteration
    round_every: int = 0  # T2: iterations per round; 0 = ceil(k / rank) per layer
    sampling: SamplingMode = "multinomial"
    enhanced_gradient: bool = True
    normalize_vectors: bool = True
    reset_singular_value_state: bool = True
    restart_warmup_steps: int = 10
    svd_dtype: Literal["float32", "float64"] = "float32"
    eps: float = 1e-8
    frozen_dtype: Literal["same", "bfloat16"] = "same"  # storage of U_frozen / Vh_frozen
    product: ProductMode = "auto"  # how x W^T is evaluated (sst.spectral.products)
    stagger_resvd: bool = True  # offset the layers' rounds so their re-SVDs fall on different steps
    # Ablations of SST-SPEC's choices (the defaults are the method):
    singular_values: Literal["all", "active"] = "all"  # active: only the r sampled values of S train
    init: Literal["svd", "orthogonal"] = "svd"  # orthogonal: random U, Vh and a flat S (same norm)

    def __post_init__(self):
        super().__post_init__()
        check_range("method.rank", self.rank, low=1)
        check_range("method.resample_every", self.resample_every, low=1)
        check_range("method.round_every", self.round_every, low=0, note="0: ceil(k / rank)")
        check_range("method.restart_warmup_steps", self.restart_warmup_steps, low=0)
        check_range("method.eps", self.eps, low=0, low_inclusive=False)


class SSTMethod(TrainingMethod):
    resample_seconds: float = 0.0  # re-sampling + re-SVD time inside training (svd_seconds adds conversion)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        targets = find_targets(model, cfg.target_modules, cfg.exclude_modules)
        check_rank(targets, cfg.rank)
        start = time.perf_counter()
        frozen = None if cfg.frozen_dtype == "same" else getattr(torch, cfg.frozen_dtype)
        replace_modules(model, targets, lambda _, lin: SpectralLinear.from_dense(
            lin, cfg.rank, cfg.sampling, self.generator, getattr(torch, cfg.svd_dtype),
            enhanced_gradient=cfg.enhanced_gradient, eps=cfg.eps, frozen_dtype=frozen, product=cfg.product,
            all_singular_values=cfg.singular_values == "all",
        ))
        if cfg.init == "orthogonal":
            for layer in self.layers(model):
                if layer.S.is_meta:
                    continue
                rms = float(layer.S.detach().double().square().mean().sqrt())
                found = random_orthogonal_factors(layer.out_features, layer.in_features,
                                                  rms, self.generator, layer.S.dtype)
                layer.load_factors_(*(t.to(layer.S.device) for t in found))
        if cfg.stagger_resvd:
            with torch.no_grad():
                for j, layer in enumerate(self.layers(model)):
                    layer.iteration += j % self.round_length(layer)
        self.svd_seconds += time.perf_counter() - start
        return model

    def round_length(self, layer: SpectralLinear) -> int:
        """T2 of ``layer``: iterations between its re-SVDs."""
        return self.config.round_every or math.ceil(layer.k / layer.rank)

    @staticmethod
    def layers(model: nn.Module) -> list[SpectralLinear]:
        return [m for m in model.modules() if isinstance(m, SpectralLinear)]

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        # Spectral factors are unit vectors and a spectrum: decoupled weight decay on them would
        # only fight the renormalisation, so they join the no-decay group.
        spectral = {id(p) for layer in self.layers(model) for p in (layer.U_active, layer.Vh_active)}
        groups = super().param_groups(model, weight_decay)
        moved = [p for p in groups[0]["params"] if id(p) in spectral]
        groups[0]["params"] = [p for p in groups[0]["params"] if id(p) not in spectral]
        groups[1]["params"] = groups[1]["params"] + moved
        return groups

    def build_optimizer(self, model: nn.Module, lr: float, *args, **kwargs) -> torch.optim.Optimizer:
        optimizer = super().build_optimizer(model, lr, *args, **kwargs)
        if self.config.singular_values == "active":
            keep_frozen_values(optimizer, self.layers(model))
        return optimizer

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> dict:
        cfg = self.config
        layers = self.layers(model)
        for batch in one_at_a_time(layers):  # sharded layers are gathered one by one
            with gathered(*batch):
                project_all_(batch, cfg.normalize_vectors)
        if step % cfg.resample_every != 0:
            return {}
        require_finite([t for layer in layers for t in (layer.S, layer.U_active, layer.Vh_active)],
                       "singular-value / active-vector tensors of the spectral layers")
        start = time.perf_counter()
        resvd = 0
        for layer in layers:
            with gathered(layer):  # the optimizer's keys are the sharded tensors: permute outside
                moved_by_svd, moved_by_sampling, failed = self._restructure(model, layer, step)
            resvd += moved_by_svd is not None and not failed
            if not cfg.reset_singular_value_state:  # each moment follows its singular value
                if moved_by_svd is not None:
                    permute_state(optimizer, layer.S, moved_by_svd)
                permute_state(optimizer, layer.S, moved_by_sampling)  # S is stored in slot order
        elapsed = time.perf_counter() - start
        self.svd_seconds += elapsed
        self.resample_seconds += elapsed
        reset = [p for layer in layers for p in (layer.U_active, layer.Vh_active)]
        if cfg.reset_singular_value_state:
            reset += [layer.S for layer in layers]
        reset_state(optimizer, reset)
        return {"resampled": len(layers), "resvd": resvd}

    def _restructure(self, model: nn.Module, layer: SpectralLinear, step: int):
        """One layer's re-SVD (when its round is over) and re-sampling -> (slot permutation of the
        re-SVD or None, slot permutation of the sampling, whether the SVD failed)."""
        cfg = self.config
        moved, failed = None, False
        if int(layer.iteration) >= self.round_length(layer):
            moved = layer.resvd_(getattr(torch, cfg.svd_dtype))
            if moved is None:  # the SVD failed twice: keep the factors, start a new round
                name = next((n for n, m in model.named_modules() if m is layer), "a spectral layer")
                warn(f"re-SVD of {name} failed in "
                     f"{cfg.svd_dtype} and float64 at step {step}; its current factors are kept")
                layer.iteration.zero_()
                moved, failed = torch.arange(layer.k, device=layer.S.device), True
            broadcast_tensors(
                [layer.U_active, layer.Vh_active, layer.S, layer.U_frozen, layer.Vh_frozen, moved]
            )
        return moved, layer.sample_(cfg.sampling, self.generator), failed

    def report(self) -> dict:
        return {**super().report(), "resample_seconds": self.resample_seconds}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "resample_seconds": self.resample_seconds}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.resample_seconds = float(state.get("resample_seconds", 0.0))

    def lr_multiplier(self, step: int) -> float:
        return restart_warmup(step, self.config.resample_every, self.config.restart_warmup_steps)


def keep_frozen_values(optimizer: torch.optim.Optimizer, layers: list[SpectralLinear]) -> None:
    """``singular_values: active``: every optimizer step leaves the frozen slots S[r:] of ``layers``
    as they were before it (they take no gradient, but weight decay and stale moments would still
    move them). Step pre/post hooks, so nothing needs saving across a resume."""
    held: list[torch.Tensor] = []

    def before(*_):
        held[:] = [layer.S.detach()[layer.rank:].clone() for layer in layers]

    def after(*_):
        with torch.no_grad():
            for layer, values in zip(layers, held):
                layer.S[layer.rank:].copy_(values)

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)
