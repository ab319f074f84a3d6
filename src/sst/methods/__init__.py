"""Training methods behind one interface: full, lora, relora (ReLoRA*), galore, sst; peers fira, sltrain, cola."""

from __future__ import annotations

from torch import nn

from sst.methods.base import MethodConfig, TrainingMethod
from sst.methods.cola import CoLAConfig, CoLAMethod
from sst.methods.cola_linear import CoLALinear
from sst.methods.fira import FiraConfig, FiraMethod
from sst.methods.full import FullConfig, FullMethod
from sst.methods.galore import GaLoreConfig, GaLoreMethod
from sst.methods.lora import LoRAConfig, LoRALinear, LoRAMethod
from sst.methods.relora import ReLoRAConfig, ReLoRAMethod
from sst.methods.sltrain import SLTrainConfig, SLTrainMethod
from sst.methods.sltrain_linear import SLTrainLinear
from sst.methods.sst import SSTConfig, SSTMethod
from sst.methods.step_watch import MissedStepWarning, watch_steps
from sst.methods.surgery import TargetError
from sst.registry import METHODS
from sst.schema import to_dict

METHODS.register_all([
    ("full", FullConfig, FullMethod),
    ("lora", LoRAConfig, LoRAMethod),
    ("relora", ReLoRAConfig, ReLoRAMethod),
    ("galore", GaLoreConfig, GaLoreMethod),
    ("sst", SSTConfig, SSTMethod),
    ("fira", FiraConfig, FiraMethod),
    ("sltrain", SLTrainConfig, SLTrainMethod),
    ("cola", CoLAConfig, CoLAMethod),
])

METHOD_CONFIGS: dict[str, type[MethodConfig]] = METHODS.configs
METHOD_CLASSES: dict[str, type[TrainingMethod]] = METHODS.classes


def build_method(config: MethodConfig, seed: int = 0) -> TrainingMethod:
    """The method object for ``config`` (its ``name`` picks the class); ``seed`` seeds its sampler."""
    if not isinstance(config, MethodConfig):
        raise TypeError(f"expected a method config such as SSTConfig(rank=...), got {type(config).__name__}")
    return METHODS.build(config, seed)


def convert(model: nn.Module, config: MethodConfig, seed: int = 0) -> tuple[nn.Module, TrainingMethod]:
    """One call: build the method, apply its surgery to ``model`` in place -> (model, method).

    Training the model without the method's optimizer or ``after_step`` (a bare
    ``transformers.Trainer``) warns ``MissedStepWarning`` at the first such optimizer step. A
    Hugging Face model's config records the method (``config.sst_method``), so every
    ``save_pretrained`` of it (Trainer checkpoints too) names the method and its rank.
    """
    method = build_method(config, seed)
    model = method.prepare_model(model)
    watch_steps(model, method)
    record_method(model, config)
    return model, method


def record_method(model: nn.Module, config: MethodConfig) -> None:
    """Store ``config`` as ``model.config.sst_method`` when the model has a Hugging Face config."""
    if hasattr(getattr(model, "config", None), "to_json_string"):
        model.config.sst_method = to_dict(config)


__all__ = [
    "METHOD_CLASSES", "METHOD_CONFIGS", "CoLAConfig", "CoLALinear", "FiraConfig", "FullConfig", "GaLoreConfig",
    "LoRAConfig", "LoRALinear", "MethodConfig", "MissedStepWarning", "ReLoRAConfig", "SLTrainConfig", "SLTrainLinear", "SSTConfig",
    "TargetError", "TrainingMethod", "build_method", "convert", "record_method",
]
