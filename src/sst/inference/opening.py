"""Open anything inference reads: a run, a checkpoint, or an export of any format.

An export folder (``export.json`` beside ``config.yaml``) is rebuilt from its own files: dense,
lowrank, pifa and cola into the task's plain model class, hf with ``from_pretrained``; the task comes
from the run config it carries (data and tokenizer for ``sst eval`` and ``sst generate``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from sst.config import ConfigError, build_config
from sst.devices import resolve_device
from sst.errors import CheckpointError, require_package
from sst.inference.export import CONFIG_FILE, INFO_FILE, load_exported
from sst.inference.loading import LoadedRun, load_run
from sst.tasks import build_task


def is_export(path: Path) -> bool:
    return (path / INFO_FILE).is_file() and (path / CONFIG_FILE).is_file()


def _hf_model(folder: Path) -> torch.nn.Module:
    transformers = require_package("transformers", message=f"{folder}: an hf export needs the "
                                   "`transformers` package: pip install 'sparse-spectral-training[hf]'")
    return transformers.AutoModelForCausalLM.from_pretrained(str(folder))


def load_export(folder: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """An export folder as a LoadedRun (``method`` None): its task, and its model in eval mode."""
    folder = Path(folder)
    info = json.loads((folder / INFO_FILE).read_text())
    try:
        config = build_config(yaml.safe_load((folder / CONFIG_FILE).read_text()))
    except ConfigError as err:
        raise CheckpointError(f"{folder / CONFIG_FILE}: not a valid run config for this version of sst ({err})") from err
    with torch.random.fork_rng(devices=[]):
        task = build_task(config.task, config.seed, folder)
        model = _hf_model(folder) if info.get("format") == "hf" else load_exported(folder)
    return LoadedRun(config, task, model.to(device).eval(), None, folder, folder)


def open_for_inference(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """``load_export`` for an export folder, else ``load_run`` (a run or checkpoint directory)."""
    device = resolve_device(device, key="--device") if isinstance(device, str) else device
    if Path(path).is_dir() and is_export(Path(path)):
        return load_export(path, device)
    return load_run(path, device)
