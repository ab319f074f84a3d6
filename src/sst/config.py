"""Typed run configuration: dataclasses, strict YAML loading and dotted ``key=value`` overrides.

A run is ``RunConfig(task=..., method=..., train=...)``. ``task`` and ``method`` are chosen by their
``name`` field from registries (``sst.tasks.TASK_CONFIGS``, ``sst.methods.METHOD_CONFIGS``).
Every unknown key or wrongly typed value raises ``ConfigError`` naming the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the dotted key."""


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
    save_every: int = 0  # 0: save only at the end
    keep_best: bool = True  # also keep best.pt by the task's selection metric
    patience: int = 0  # early stopping after this many evaluations without improvement; 0 = off
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"
    compile: bool = False
    progress: bool = True
    tensorboard: bool = False


@dataclass
class RunConfig:
    """Everything one training run needs; ``task`` and ``method`` are picked by their ``name``."""

    task: Any = None  # a TaskConfig subclass, chosen by task.name
    method: Any = None  # a MethodConfig subclass, chosen by method.name
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    out_dir: str = "runs/default"


# --------------------------------------------------------------------------------------------
# Strict conversion from plain data to dataclasses


def _registries() -> dict[str, dict[str, type]]:
    from sst.methods import METHOD_CONFIGS
    from sst.tasks import TASK_CONFIGS

    return {"task": TASK_CONFIGS, "method": METHOD_CONFIGS}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def check_value(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert (lists to tuples, ints to floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return check_value(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: {value!r} matches none of {[_type_name(a) for a in args]}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(check_value(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [check_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads exponents without a dot (3e-4) as strings; accept them as numbers.
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def from_dict(cls: type, data: Any, key: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{key or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{key}." if key else ""
        raise ConfigError(
            f"unknown config key(s) {[where + u for u in unknown]}; allowed: {sorted(fields)}"
        )
    kwargs = {}
    registries = _registries() if cls is RunConfig else {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        if name in registries:
            kwargs[name] = _from_registry(registries[name], value, sub)
        else:
            kwargs[name] = check_value(value, hints[name], sub)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{key or cls.__name__}: {err}") from err
    return obj


def _from_registry(registry: dict[str, type], value: Any, key: str) -> Any:
    if not isinstance(value, dict):
        if any(isinstance(value, c) for c in registry.values()):
            return value
        raise ConfigError(f"{key}: expected a mapping with a 'name', got {value!r}")
    name = value.get("name")
    if name not in registry:
        raise ConfigError(f"{key}.name: {name!r} is not one of {sorted(registry)}")
    return from_dict(registry[name], value, key)


def to_dict(obj: Any) -> Any:
    """Plain-data (YAML/JSON-ready) view of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------------------------
# Files, presets and overrides


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
            # Switching the task/method kind keeps only the keys the new kind also has.
            registry = _registries().get(keys[0], {})
            if value in registry:
                allowed = {f.name for f in dataclasses.fields(registry[value])}
                for k in [k for k in node if k not in allowed]:
                    del node[k]
        node[keys[-1]] = value
    return data


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
