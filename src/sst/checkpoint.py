"""Checkpoints: numbered folders written whole, and a ``last`` / ``best`` link swapped atomically.

A save writes model.safetensors, state.pt and config.yaml into a hidden temporary folder, then
manifest.json (each file's size, and the SHA-256 of the binary ones), renames the folder to
``<name>-<n>`` and points the symlink ``<name>`` at it with one os.replace. Superseded folders
are renamed to a hidden trash name before they are deleted. So a crash at any instruction leaves
the newest complete checkpoint reachable, and nothing half-deleted can look complete.
state.pt holds tensors and plain values only (``torch.load(weights_only=True)``). A sharded
(FSDP2) checkpoint keeps the same scheme with shards/ (torch.distributed.checkpoint) for weights.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from sst.atomic import fsync_dir
from sst.errors import CheckpointError

LAST, BEST = "last", "best"  # a run directory's checkpoints: the newest, and the best by validation
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
SHARDS_DIR = "shards"  # a sharded (FSDP2) checkpoint's weights and optimizer state, one file per rank
CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"
# Binary files get a checksum; config.yaml is text a user may read and edit, and the strict
# config loader validates it on every load.
CHECKSUMMED = (MODEL_FILE, STATE_FILE)
KEEP = {LAST: 2}  # numbered folders kept per link name; 1 for any other name

# Keys that may change between a checkpoint and its resumption without breaking exactness
# of what was already trained (bookkeeping and the length of the run).
RESUMABLE_CHANGES = {
    "train.steps", "train.eval_every", "train.log_every", "train.save_every", "train.save_every_minutes",
    "train.progress", "train.patience", "train.tensorboard", "train.keep_best", "out_dir", "train.device",
}
# Keys that change how training goes on from the checkpoint: allowed on resume so that a diverged
# run can continue from its last finite checkpoint with a lower lr or a longer warm-up, or trade
# speed for memory (activation checkpointing: the same gradients, another peak memory and step
# time); each such change is returned by check_same_run for the run to record.
# grad_accum: a run resumed with another world size keeps its global batch (world x grad_accum)
# by changing it (micro-batch index = (step * accum + micro) * world + rank).
RECORDED_CHANGES = {"train.lr", "train.warmup_steps", "train.warmup_ratio", "train.activation_checkpointing",
                    "train.grad_accum"}

__all__ = [
    "BEST", "CONFIG_FILE", "LAST", "MODEL_FILE", "RECORDED_CHANGES", "RESUMABLE_CHANGES", "STATE_FILE",
    "CheckpointError", "check_same_run",
    "clean_stale", "config_differences", "find_checkpoint", "is_complete", "load_checkpoint",
    "load_config_file", "load_sharded_checkpoint", "load_weights", "roll_back", "save_checkpoint",
    "save_sharded_checkpoint",
]


def _index_pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(name) + r"-(\d{6,})")


def numbered_folders(path: Path) -> list[tuple[int, Path]]:
    """The ``<name>-<n>`` folders beside link ``path``, oldest first."""
    pattern = _index_pattern(path.name)
    found = []
    if path.parent.is_dir():
        for entry in path.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and entry.is_dir() and not entry.is_symlink():
                found.append((int(match.group(1)), entry))
    return sorted(found)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(folder: Path) -> dict | None:
    try:
        files = json.loads((folder / MANIFEST_FILE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if isinstance(files, dict) else None


def is_complete(folder: str | Path) -> bool:
    """Every file the loader needs is there: the manifest and what it lists (contents are checked
    on load). Folders written before manifests existed need model.safetensors and state.pt."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    if (folder / MANIFEST_FILE).exists():
        files = _manifest(folder)
        return files is not None and all((folder / name).is_file() for name in files)
    return (folder / MODEL_FILE).is_file() and (folder / STATE_FILE).is_file()


def verify_file(file: Path, problem: str) -> None:
    """Raise CheckpointError("<file>: <problem> ...") if ``file`` differs from its manifest entry."""
    entry = (_manifest(file.parent) or {}).get(file.name)
    if not entry:
        return  # written before manifests existed
    size = file.stat().st_size
    if size != entry.get("size"):
        raise CheckpointError(f"{file}: {problem} ({size} bytes, {entry.get('size')} were written)")
    if "sha256" in entry and _sha256(file) != entry["sha256"]:
        raise CheckpointError(f"{file}: {problem} (its SHA-256 differs from the one written with it)")


def _describe_os_error(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "the disk is full"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (read-only folder?)"
    return err.strerror or str(err)


def save_checkpoint(
    path: str | Path, model: nn.Module, state: dict[str, Any], config: dict[str, Any] | None = None
) -> Path:
    """Write a complete checkpoint and point link ``path`` at it; returns the new numbered folder.

    An OSError (disk full, permissions) becomes a CheckpointError that says so; the previous
    checkpoint stays as it was.
    """
    path = Path(path)
    tmp = _new_folder(path)
    try:
        save_model(model, str(tmp / MODEL_FILE))
        torch.save(state, tmp / STATE_FILE)
        if config is not None:
            (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_write_error(err, path)
        raise
    return _seal(tmp, path)


def _raise_write_error(err: BaseException, path: Path) -> None:
    """Turn an OSError (disk full, permissions) while writing into a CheckpointError that says so."""
    if isinstance(err, OSError) or (isinstance(err, RuntimeError) and "unexpected pos" in str(err)):
        # torch.save reports a full disk as "unexpected pos" from its zip writer.
        reason = _describe_os_error(err) if isinstance(err, OSError) else f"the disk is full? ({err})"
        kept = find_checkpoint(path)
        raise CheckpointError(
            f"cannot write checkpoint {path}: {reason}; "
            + (f"the previous checkpoint {kept} is kept" if kept else "no earlier checkpoint exists")
        ) from err


def _new_folder(path: Path) -> Path:
    """A hidden temporary folder beside link ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {_describe_os_error(err)}") from err


def _seal(tmp: Path, path: Path) -> Path:
    """Write the manifest of the files in ``tmp`` (subfolders included), rename it to the next
    numbered folder and point link ``path`` at it; returns the numbered folder."""
    root = path.parent
    try:
        files = {}
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            name = f.relative_to(tmp).as_posix()
            files[name] = {"size": f.stat().st_size}
            if name in CHECKSUMMED:
                files[name]["sha256"] = _sha256(f)
        with open(tmp / MANIFEST_FILE, "w") as fh:  # written last: its presence marks the folder whole
            json.dump({"files": files}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        for folder in (*sorted(p for p in tmp.rglob("*") if p.is_dir()), tmp):
            fsync_dir(folder)
        existing = numbered_folders(path)
        target = root / f"{path.name}-{(existing[-1][0] + 1 if existing else 1):06d}"
        os.rename(tmp, target)
        fsync_dir(root)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_write_error(err, path)
        raise
    try:
        _point(path, target)
        _prune(path, keep=KEEP.get(path.name, 1), protect=target)
    except OSError as err:  # the new folder is complete and find_checkpoint reaches it without the link
        raise CheckpointError(f"checkpoint {target} was written but {path} could not be updated: "
                              f"{_describe_os_error(err)}") from err
    return target


def _agree(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a one-element object broadcast)."""
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def save_sharded_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any], config: dict[str, Any] | None = None,
) -> Path:
    """``save_checkpoint`` for an FSDP2 model, called by every rank: each rank writes its shards of
    the weights and optimizer state (``torch.distributed.checkpoint``, keyed by parameter name, so
    any world size can load them) into ``shards/``; rank 0 adds state.pt, config.yaml and the
    manifest and swaps the link. Returns the new numbered folder on every rank."""
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    path, main = Path(path), torch.distributed.get_rank() == 0
    tmp = Path(_agree(str(_new_folder(path)) if main else None))
    try:
        if optimizer is None:
            shards = {"model": get_model_state_dict(model)}
        else:
            model_state, optim_state = get_state_dict(model, optimizer)
            shards = {"model": model_state, "optimizer": optim_state}
        dcp.save(shards, checkpoint_id=str(tmp / SHARDS_DIR))
        if main:
            torch.save(state, tmp / STATE_FILE)
            if config is not None:
                (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        torch.distributed.barrier()
    except BaseException as err:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            _raise_write_error(err, path)
        raise
    target = _seal(tmp, path) if main else None
    return Path(_agree(str(target) if main else None))


def _sharded_folder(path: str | Path) -> Path:
    found = find_checkpoint(path)
    if found is None:
        raise CheckpointError(f"no checkpoint at {path} (expected {SHARDS_DIR}/ and {STATE_FILE})")
    if not (found / SHARDS_DIR).is_dir():
        raise CheckpointError(
            f"{found}: holds no {SHARDS_DIR}/ (it was written without train.parallelism=fsdp); "
            "resume it with the parallelism it was written with"
        )
    for name, entry in (_manifest(found) or {}).items():
        if name.startswith(SHARDS_DIR + "/") and (found / name).stat().st_size != entry.get("size"):
            raise CheckpointError(f"{found / name}: truncated or corrupt ({entry.get('size')} bytes were written)")
    return found


def load_sharded_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Load a ``save_sharded_checkpoint`` folder into an FSDP2 ``model`` (and ``optimizer``), each
    rank reading the parts of its own shards whatever the world size that wrote it; returns the
    state dict of state.pt. Called by every rank."""
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict, get_state_dict, set_model_state_dict, set_state_dict,
    )

    found = _sharded_folder(path)
    try:
        if optimizer is None:
            shards = {"model": get_model_state_dict(model)}
            dcp.load(shards, checkpoint_id=str(found / SHARDS_DIR))
            set_model_state_dict(model, shards["model"])
        else:
            model_state, optim_state = get_state_dict(model, optimizer)
            shards = {"model": model_state, "optimizer": optim_state}
            dcp.load(shards, checkpoint_id=str(found / SHARDS_DIR))
            set_state_dict(model, optimizer, model_state_dict=shards["model"], optim_state_dict=shards["optimizer"])
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{found / SHARDS_DIR}: does not fit this model or is corrupt "
                              f"({type(err).__name__}: {err})") from err
    verify_file(found / STATE_FILE, "cannot be read")
    try:
        return torch.load(found / STATE_FILE, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated pickles raise several different error types
        raise CheckpointError(f"{found / STATE_FILE}: cannot be read ({type(err).__name__}: {err})") from err


def _trash(folder: Path, link: Path) -> None:
    """Rename ``folder`` out of sight first, then delete it: a half-deleted one is never found.
    The hidden name starts with ``.<link name>.trash-`` so that ``clean_stale`` finds leftovers."""
    trash = folder.with_name(f".{link.name}.trash-{folder.name}-{uuid.uuid4().hex[:8]}")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _point(path: Path, target: Path) -> None:
    """Make symlink ``path`` name ``target`` (a sibling) in one atomic replace."""
    link = path.with_name(f".{path.name}.link-{uuid.uuid4().hex[:8]}")
    os.symlink(target.name, link, target_is_directory=True)
    try:
        if path.is_dir() and not path.is_symlink():  # a real folder left by an older version
            _trash(path, path)
        os.replace(link, path)
    except BaseException:
        link.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _prune(path: Path, keep: int, protect: Path) -> None:
    for _, folder in numbered_folders(path)[:-keep]:
        if folder != protect:
            _trash(folder, path)
    old = path.with_name(path.name + ".old")  # an older version's interrupted swap
    if old.is_dir():
        _trash(old, path)


def find_checkpoint(path: str | Path) -> Path | None:
    """The complete checkpoint behind link ``path``; else the newest complete numbered folder;
    else the ``.old`` copy an older version's interrupted swap left; else None."""
    path = Path(path)
    if is_complete(path):
        return path
    for _, folder in reversed(numbered_folders(path)):
        if is_complete(folder):
            return folder
    old = path.with_name(path.name + ".old")
    return old if is_complete(old) else None


def roll_back(path: str | Path) -> Path | None:
    """Remove the newest checkpoint behind link ``path`` and point ``path`` at the one before it
    (for a checkpoint known to be unusable); returns ``path``, or None if no checkpoint is left."""
    path = Path(path)
    current = find_checkpoint(path)
    if current is None:
        return None
    current = current.resolve()
    folders = numbered_folders(path)
    index = next((n for n, f in folders if f.resolve() == current), None)
    older = [f for n, f in folders if index is not None and n < index and is_complete(f)]
    if older:
        _point(path, older[-1])
    elif path.is_symlink():
        path.unlink()
        fsync_dir(path.parent)
    if index is not None:
        _trash(current, path)
    return path if older else None


def clean_stale(path: str | Path, keep: Path) -> list[str]:
    """Remove what interrupted saves left beside link ``path`` (temporary folders and links, trash,
    incomplete folders, folders newer than ``keep``, the checkpoint a run resumes from); returns
    the names removed. Never touches ``keep`` or what ``path`` points to."""
    path, keep = Path(path), Path(keep)
    removed = []
    prefix = f".{path.name}."
    if not path.parent.is_dir():
        return removed
    keep_real = keep.resolve()
    keep_index = next((n for n, f in numbered_folders(path) if f.resolve() == keep_real), None)
    for entry in sorted(path.parent.iterdir()):
        stale = entry.name.startswith(prefix) and any(
            entry.name[len(prefix):].startswith(k) for k in ("tmp-", "link-", "trash-"))
        match = _index_pattern(path.name).fullmatch(entry.name)
        if match and entry.resolve() != keep_real:
            newer = keep_index is not None and int(match.group(1)) > keep_index
            stale = stale or newer or not is_complete(entry)
        if not stale:
            continue
        if entry.is_symlink() or entry.is_file():
            entry.unlink(missing_ok=True)
        else:
            shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    if path.is_symlink() and path.resolve() != keep_real and not is_complete(path):
        path.unlink()
        removed.append(path.name)
    return removed


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
    verify_file(found / STATE_FILE, "cannot be read")
    try:
        return torch.load(found / STATE_FILE, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated pickles raise several different error types
        raise CheckpointError(f"{found / STATE_FILE}: cannot be read ({type(err).__name__}: {err})") from err


def load_weights(path: str | Path, model: nn.Module) -> None:
    """Strictly load ``path``/model.safetensors into ``model``, with errors naming the file (or, for
    a sharded checkpoint, its shards/ assembled into whole tensors)."""
    file = Path(path) / MODEL_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file() and (Path(path) / SHARDS_DIR).is_dir():
        _load_shards_whole(Path(path), model)
        return
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    verify_file(file, "truncated or corrupt")
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


def _load_shards_whole(folder: Path, model: nn.Module) -> None:
    """The weights of a sharded checkpoint into a model that is not sharded (inference, export):
    torch.distributed.checkpoint assembles each whole tensor from the shards, in one process."""
    from torch.distributed import checkpoint as dcp

    found = _sharded_folder(folder)
    state = {"model": model.state_dict()}
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
            dcp.load(state, checkpoint_id=str(found / SHARDS_DIR), no_dist=True)
        model.load_state_dict(state["model"], strict=True)
    except Exception as err:
        raise CheckpointError(f"{found / SHARDS_DIR}: does not fit this model or is corrupt "
                              f"({type(err).__name__}: {err})") from err


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


def _lookup(config: dict, dotted: str) -> Any:
    for key in dotted.split("."):
        config = config.get(key) if isinstance(config, dict) else None
    return config


def check_same_run(saved: dict, current: dict, where: Path) -> list[tuple[str, Any, Any]]:
    """Raise CheckpointError if the checkpoint's config differs in anything that matters;
    return the RECORDED_CHANGES that differ, as (dotted key, saved value, current value)."""
    changed = config_differences(saved, current)
    diffs = [d for d in changed if d not in RESUMABLE_CHANGES | RECORDED_CHANGES]
    if diffs:
        raise CheckpointError(
            f"checkpoint {where} was written by another configuration: {diffs} differ; "
            f"use a new out_dir, or resume with the same config (only {sorted(RECORDED_CHANGES)} "
            "and bookkeeping keys may change)"
        )
    return [(key, _lookup(saved, key), _lookup(current, key)) for key in changed if key in RECORDED_CHANGES]
