"""Typed config schema: strict conversion of plain data (YAML, JSON, Python) into dataclasses.

``from_dict(Cls, mapping)`` rejects unknown keys and wrongly typed values with a ``ConfigError``
naming the dotted key; ``check_range`` does the same for numbers outside their allowed range. A
dataclass field whose metadata names a ``registry`` is polymorphic: its ``name`` key picks the
dataclass from that registry (``sst.registry``). Depends only on sst.errors.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from sst.errors import ConfigError


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
        for option in args:
            if option is type(None):
                continue
            try:
                return check_value(value, option, key)
            except ConfigError:
                continue
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


def check_range(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    note: str = "",
) -> None:
    """Raise ``ConfigError`` naming ``key`` unless ``value`` is a finite number within the bounds.

    ``None`` leaves a side open; the message states the allowed range, e.g.
    "train.lr: must be > 0, got -1.0" or "train.betas[0]: must be in [0, 1), got 1.0".
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    finite = -float("inf") < value < float("inf")  # False for nan as well
    above = low is None or (value >= low if low_inclusive else value > low)
    below = high is None or (value <= high if high_inclusive else value < high)
    if finite and above and below:
        return
    if low is not None and high is not None:
        bounds = f"in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
    elif low is not None:
        bounds = f"{'>=' if low_inclusive else '>'} {low}"
    elif high is not None:
        bounds = f"{'<=' if high_inclusive else '<'} {high}"
    else:
        bounds = ""
    allowed = " and ".join(part for part in ("" if finite else "finite", bounds) if part)
    if note:
        allowed += f" ({note})"
    raise ConfigError(f"{key}: must be {allowed}, got {value!r}")


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
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        registry = fields[name].metadata.get("registry")
        if registry is not None:
            kwargs[name] = _from_registry(registry, value, sub)
        else:
            kwargs[name] = check_value(value, hints[name], sub)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key or cls.__name__}: {err}") from err


def _from_registry(registry: Any, value: Any, key: str) -> Any:
    """A polymorphic field: the mapping's ``name`` picks the dataclass from ``registry.configs``."""
    configs = registry.configs
    if not isinstance(value, dict):
        if any(isinstance(value, c) for c in configs.values()):
            return value
        raise ConfigError(f"{key}: expected a mapping with a 'name', got {value!r}")
    name = value.get("name")
    if name not in configs:
        raise ConfigError(f"{key}.name: {name!r} is not one of {sorted(configs)}")
    return from_dict(configs[name], value, key)


def to_dict(obj: Any) -> Any:
    """Plain-data (YAML/JSON-ready) view of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
