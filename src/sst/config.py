"""Typed run configuration: dataclasses, strict YAML loading and dotted ``key=value`` overrides.

A run is ``RunConfig(task=..., method=..., train=...)``. ``task`` and ``method`` are chosen by their
``name`` field from the registries in ``sst.registry`` (filled by importing ``sst.methods`` and
``sst.tasks``). Every unknown key or wrongly typed value raises ``ConfigError`` naming the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

import sst.methods  # noqa: F401  (fills METHODS)
import sst.tasks  # noqa: F401  (fills TASKS)
from sst.registry import METHODS, TASKS, Registry
from sst.schema import ConfigError, check_range, check_value, from_dict, to_dict

_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping shared by every task and method."""

    steps: int = 100  # optimizer steps
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    schedule: Literal["cosine", "linear", "constant", "inverse_sqrt"] = "cosine"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # used when warmup_steps == 0
    min_lr_ratio: float = 0.1  # final lr / peak lr for cosine and linear decay
    grad_clip: float = 1.0  # 0 disables clipping
    eval_every: int = 0  # 0: evaluate only at the end
    eval_batches: int = 0  # batches per periodic evaluation, 0 = all; the final one always uses all
    log_every: int = 10
    save_every: int = 0  # 0: save only at the end (and by time, below)
    save_every_minutes: float = 10.0  # also save when this much time has passed since the last save; 0 = off
    keep_best: bool = True  # also keep best.pt by the task's selection metric
    patience: int = 0  # early stopping after this many evaluations without improvement; 0 = off
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"
    compile: bool = False
    parallelism: Literal["ddp", "fsdp"] = "ddp"  # with torchrun: replicate (ddp) or shard (fsdp, FSDP2) the model
    activation_checkpointing: bool = False  # recompute each block's activations in backward (less memory)
    progress: bool = True
    tensorboard: bool = False

    def __post_init__(self):
        for key in ("steps", "grad_accum", "log_every"):
            check_range(f"train.{key}", getattr(self, key), low=1)
        for key in ("warmup_steps", "eval_every", "eval_batches", "save_every", "patience"):
            check_range(f"train.{key}", getattr(self, key), low=0)
        check_range("train.lr", self.lr, low=0, low_inclusive=False)
        check_range("train.save_every_minutes", self.save_every_minutes, low=0, note="0 disables it")
        check_range("train.adam_eps", self.adam_eps, low=0, low_inclusive=False)
        check_range("train.weight_decay", self.weight_decay, low=0)
        check_range("train.grad_clip", self.grad_clip, low=0, note="0 disables clipping")
        for i, beta in enumerate(self.betas):
            check_range(f"train.betas[{i}]", beta, low=0, high=1, high_inclusive=False)
        check_range("train.warmup_ratio", self.warmup_ratio, low=0, high=1, high_inclusive=False)
        check_range("train.min_lr_ratio", self.min_lr_ratio, low=0, high=1)


@dataclass
class RunConfig:
    """Everything one training run needs; ``task`` and ``method`` are picked by their ``name``."""

    task: Any = field(default=None, metadata={"registry": TASKS})  # a TaskConfig, by task.name
    method: Any = field(default=None, metadata={"registry": METHODS})  # a MethodConfig, by method.name
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    out_dir: str = "runs/default"


# --------------------------------------------------------------------------------------------
# Files, presets and overrides


def _registries() -> dict[str, Registry]:
    """RunConfig's polymorphic sections: field name -> the registry its ``name`` picks from."""
    return {f.name: f.metadata["registry"] for f in dataclasses.fields(RunConfig) if "registry" in f.metadata}


def preset_dir() -> Path:
    return Path(__file__).resolve().parent / "configs"


def list_presets() -> list[str]:
    root = preset_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a shipped preset (``lm-demo``, ``tiny/lm``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = preset_dir() / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    raise ConfigError(
        f"config {name_or_path!r} is neither a file nor a preset; presets: {list_presets()}"
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=3e-4`` -> (['train', 'lr'], 0.0003); values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    value = yaml.safe_load(raw) if raw != "" else ""
    if isinstance(value, str) and _EXPONENT.fullmatch(value):
        value = float(value)  # YAML 1.1 leaves 3e-4 as a string
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of ``data`` with dotted overrides applied (creating nested mappings)."""
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k, {}), dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a mapping")
            node = node.setdefault(k, {})
        if keys[-1] == "name" and len(keys) == 2 and node.get("name") not in (None, value):
            registry = _registries().get(keys[0])
            if registry is not None and value in registry.configs:
                _switch_kind(node, registry.configs.get(node["name"]), registry.configs[value])
        node[keys[-1]] = value
    return data


def _switch_kind(node: dict, old: type | None, new: type) -> None:
    """Switching a task/method kind keeps the keys the new kind also has, and carries the shared
    interval across (``interval_key``: SST resample_every -> ReLoRA reset_every -> GaLore
    proj_update_every) unless the new kind's key is already set; the other keys are dropped."""
    old_key, new_key = getattr(old, "interval_key", None), getattr(new, "interval_key", None)
    if old_key and new_key and old_key in node and new_key not in node:
        node[new_key] = node[old_key]
    allowed = {f.name for f in dataclasses.fields(new)}
    for k in [k for k in node if k not in allowed]:
        del node[k]


def load_config(name_or_path: str, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (file or preset), apply overrides, and validate it strictly."""
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    data = apply_overrides(data, overrides or [])
    return build_config(data)


def build_config(data: dict) -> RunConfig:
    for required in ("task", "method"):
        if required not in data:
            raise ConfigError(f"missing required key {required!r}")
    return from_dict(RunConfig, data)


__all__ = [
    "ConfigError", "RunConfig", "TrainConfig", "apply_overrides", "build_config", "check_range",
    "check_value", "from_dict", "list_presets", "load_config", "parse_override", "resolve_config_path",
    "to_dict",
]
