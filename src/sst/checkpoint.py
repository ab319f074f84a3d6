"""Checkpoints: a directory with model.safetensors, state.pt and config.yaml, replaced atomically.

state.pt holds the optimizer, the method's state, the loop's counters and RNG states: tensors and
plain values only, so it loads with ``torch.load(weights_only=True)``. A new checkpoint is built in
a temporary directory and swapped in by renames, so a crash never leaves a half-written one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

LAST, BEST = "last", "best"  # a run directory's checkpoints: the newest, and the best by validation
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"

# Keys that may change between a checkpoint and its resumption without breaking exactness
# of what was already trained (bookkeeping and the length of the run).
RESUMABLE_CHANGES = {
    "train.steps", "train.eval_every", "train.log_every", "train.save_every", "train.progress",
    "train.patience", "train.tensorboard", "train.keep_best", "out_dir", "train.device",
}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt, or belongs to another configuration."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | Path, model: nn.Module, state: dict[str, Any], config: dict[str, Any] | None = None
) -> Path:
    """Write ``path``/ {model.safetensors, state.pt, config.yaml} atomically; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        save_model(model, str(tmp / MODEL_FILE))
        torch.save(state, tmp / STATE_FILE)
        if config is not None:
            (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = path.with_name(path.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def find_checkpoint(path: str | Path) -> Path | None:
    """``path`` if complete, else the ``.old`` copy left by an interrupted swap, else None."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".old")):
        if (candidate / MODEL_FILE).is_file() and (candidate / STATE_FILE).is_file():
            return candidate
    return None


def load_config_file(path: str | Path) -> dict[str, Any]:
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: missing; is {path} a checkpoint directory?")
    try:
        return yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise CheckpointError(f"{file}: corrupt YAML ({err})") from err


def load_checkpoint(path: str | Path, model: nn.Module, map_location: str | torch.device = "cpu") -> dict:
    """Load weights into ``model`` (strict) and return the state dict of state.pt."""
    found = find_checkpoint(path)
    if found is None:
        raise CheckpointError(f"no checkpoint at {path} (expected {MODEL_FILE} and {STATE_FILE})")
    load_weights(found, model)
    try:
        return torch.load(found / STATE_FILE, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated pickles raise several different error types
        raise CheckpointError(f"{found / STATE_FILE}: cannot be read ({type(err).__name__}: {err})") from err


def load_weights(path: str | Path, model: nn.Module) -> None:
    """Strictly load ``path``/model.safetensors into ``model``, with errors naming the file."""
    file = Path(path) / MODEL_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        missing, unexpected = load_model(model, str(file), strict=False)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{file}: truncated or corrupt ({err})") from err
    except RuntimeError as err:
        raise CheckpointError(f"{file}: does not fit this model ({err})") from err
    if missing or unexpected:
        raise CheckpointError(
            f"{file}: does not fit this model; missing keys {sorted(missing)[:5]}, "
            f"unexpected keys {sorted(unexpected)[:5]} (is it from another config or method?)"
        )


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_differences(a, b, name + ".")
        elif a != b:
            diffs.append(name)
    return diffs


def check_same_run(saved: dict, current: dict, where: Path) -> None:
    """Raise CheckpointError if the checkpoint's config differs in anything that matters."""
    diffs = [d for d in config_differences(saved, current) if d not in RESUMABLE_CHANGES]
    if diffs:
        raise CheckpointError(
            f"checkpoint {where} was written by another configuration: {diffs} differ; "
            "use a new out_dir, or resume with the same config"
        )
