"""Hyper-parameter sweeps for comparisons: every method tuned on its own, chosen on validation only.

A sweep is {dotted key: [values]}; its cells are the Cartesian product. A key that a method's
config does not have (``method.resample_every`` for LoRA) is dropped for that method. The chosen
cell of a method is the one with the best *validation* selection metric (never a test metric);
a chosen value at the end of its grid is flagged, since the optimum may lie outside it.
A key written ``METHOD:KEY`` (``sst:train.lr``) is that method's own grid and replaces the shared
grid of KEY for it, so that each method's grid can be centred on its own optimum.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import yaml

from sst.config import RunConfig, build_config, to_dict
from sst.errors import ConfigError


def parse_sweep(texts: list[str] | None) -> dict[str, list]:
    """``["train.lr=1e-3,3e-3", "sst:train.lr=1e-2,3e-2"]`` -> {"train.lr": [0.001, 0.003],
    "sst:train.lr": [0.01, 0.03]} (values read as YAML scalars)."""
    from sst.registry import METHODS

    sweep: dict[str, list] = {}
    for text in texts or []:
        key, sep, raw = text.partition("=")
        if not sep or not key or not raw:
            raise ConfigError(f"--sweep {text!r}: expected [METHOD:]KEY=V1,V2,... (e.g. train.lr=1e-3,3e-3)")
        method, colon, bare = key.rpartition(":")
        if colon and method not in METHODS.names():
            raise ConfigError(f"--sweep {text!r}: unknown method {method!r}; choose from {sorted(METHODS.names())}")
        if bare.split(".")[0] not in ("train", "method", "task"):
            raise ConfigError(f"--sweep {text!r}: the key must start with train., method. or task.")
        values = []
        for item in raw.split(","):
            value = yaml.safe_load(item)
            if isinstance(value, str):
                try:
                    value = float(value)  # YAML 1.1 reads 3e-4 as a string
                except ValueError:
                    pass
            values.append(value)
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"--sweep {text!r}: repeated values")
        sweep[key] = values
    return sweep


def applicable(sweep: dict[str, list], config: RunConfig) -> dict[str, list]:
    """The grid of ``config``'s method: shared keys that exist in ``config`` (a method lacking a key
    drops it), each replaced by the method's own ``METHOD:KEY`` grid where there is one."""
    data = to_dict(config)
    kept = {}
    name = config.method.name
    own = {key.partition(":")[2]: values for key, values in sweep.items() if key.startswith(f"{name}:")}
    shared = {key: values for key, values in sweep.items() if ":" not in key}
    for key, values in {**shared, **own}.items():
        node = data
        for part in key.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is not KeyError:
            kept[key] = values
    return kept


def cells(sweep: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the sweep's values, in grid order (one empty cell for no sweep)."""
    keys = list(sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))]


def cell_label(cell: dict[str, Any]) -> str:
    """A folder name for a cell: ``lr=0.003,resample_every=100``."""
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in cell.items()) or "default"


def with_cell(config: RunConfig, cell: dict[str, Any]) -> RunConfig:
    """``config`` with the cell's values set (validated like any config)."""
    data = copy.deepcopy(to_dict(config))
    for key, value in cell.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return build_config(data)


def choose(results: list[dict], metric: str, higher_is_better: bool) -> int | None:
    """Index of the best finite ``metric`` value among ``results`` (None if none is finite)."""
    finite = [(r[metric], i) for i, r in enumerate(results) if isinstance(r.get(metric), float | int)
              and math.isfinite(r[metric])]
    if not finite:
        return None
    pick = max if higher_is_better else min
    return pick(finite, key=lambda vi: (vi[0], -vi[1]) if higher_is_better else (vi[0], vi[1]))[1]


def at_edge(sweep: dict[str, list], cell: dict[str, Any]) -> list[str]:
    """Keys whose chosen value is the smallest or largest value of a numeric grid of 2+ values."""
    edge = []
    for key, values in sweep.items():
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if len(values) > 1 and numeric and cell.get(key) in (min(values), max(values)):
            edge.append(key)
    return edge
