"""The PEFT-style life of a converted model: save, load back in one call, count, merge and unload.

A folder holds the model's full state with its factors (``model.safetensors``), the method config
and state (``sst_method.json``, ``sst_method.pt``) and the base model's config (HF ``config.json``,
our LLaMA's ``sst_llama.json``); SSTTrainer checkpoints and a converted HF model's own
``save_pretrained`` load too. "All" parameters = those of the merged, plain model, for every method.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from sst.errors import CheckpointError, UsageError, warn
from sst.inference.merge import merge_model
from sst.integrations.hf import METHOD_STATE_FILE, load_method_state, require_transformers, save_method_state
from sst.methods import TrainingMethod, build_method
from sst.methods.step_watch import watch_steps
from sst.models.llama import LlamaConfig, LlamaModel
from sst.registry import METHODS
from sst.schema import from_dict, to_dict
from sst.train.memory import count_parameters as parameter_counts

WEIGHTS_FILE, METHOD_CONFIG_FILE, LLAMA_CONFIG_FILE, HF_CONFIG_FILE = (
    "model.safetensors", "sst_method.json", "sst_llama.json", "config.json",
)


def print_trainable_parameters(model: nn.Module) -> str:
    """Print (and return) ``trainable params: T || all params: A || trainable%: P``, PEFT's line;
    "all" is the merged model's count (``sst.train.memory.count_parameters``)."""
    trainable, total = parameter_counts(model)
    line = f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
    print(line)
    return line


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every factored layer into a plain nn.Linear in place; returns the plain model
    (a Hugging Face model then saves and loads with ``save_pretrained`` / ``from_pretrained``)."""
    return merge_model(model)


def save_pretrained(model: nn.Module, method: TrainingMethod, folder: str | Path) -> Path:
    """Write the converted ``model`` with its ``method`` to ``folder`` (see the module doc)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / WEIGHTS_FILE))  # shared (tied) tensors are stored once
    (folder / METHOD_CONFIG_FILE).write_text(json.dumps(to_dict(method.config), indent=2))
    save_method_state(method, folder)
    if isinstance(model, LlamaModel):
        (folder / LLAMA_CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(model.config), indent=2))
    elif hasattr(model, "config") and hasattr(model.config, "save_pretrained"):
        model.config.save_pretrained(str(folder))
    return folder


def _base_model(folder: Path) -> nn.Module:
    if (folder / LLAMA_CONFIG_FILE).is_file():
        return LlamaModel(LlamaConfig(**json.loads((folder / LLAMA_CONFIG_FILE).read_text())))
    if (folder / HF_CONFIG_FILE).is_file():
        tf = require_transformers()
        return tf.AutoModelForCausalLM.from_config(tf.AutoConfig.from_pretrained(str(folder)))
    raise UsageError(f"from_pretrained({folder}): it holds no model config ({LLAMA_CONFIG_FILE} or "
                     f"{HF_CONFIG_FILE}); pass the base model: from_pretrained(folder, model=...)")


def _method_config(folder: Path) -> dict:
    """The saved method config: sst_method.json, else the ``sst_method`` of a HF config.json."""
    if (folder / METHOD_CONFIG_FILE).is_file():
        return json.loads((folder / METHOD_CONFIG_FILE).read_text())
    if (folder / HF_CONFIG_FILE).is_file():
        saved = json.loads((folder / HF_CONFIG_FILE).read_text()).get("sst_method")
        if isinstance(saved, dict):
            return saved
    raise CheckpointError(f"{folder / METHOD_CONFIG_FILE}: missing (and no sst_method in a config.json); "
                          f"is {folder} a folder written by sst save_pretrained or SSTTrainer?")


def from_pretrained(folder: str | Path, model: nn.Module | None = None) -> tuple[nn.Module, TrainingMethod]:
    """Load a ``save_pretrained`` folder -> (converted model, method), equal to what was saved.

    ``model``: the plain base model to convert (built from the folder's config when None). The
    weights load strictly; the method's state (its sampler) too, so training can go on.
    """
    folder = Path(folder)
    saved = _method_config(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: missing; is {folder} a folder written by sst save_pretrained? "
                              "(sharded weights are not read: save with a larger max_shard_size)")
    config = from_dict(METHODS.config_class(saved.get("name", "")), saved, "method")
    with torch.random.fork_rng(devices=[]):  # the surgery's random draws are overwritten by the load
        model = model if model is not None else _base_model(folder)
        method = build_method(config)
        model = method.prepare_model(model)
    missing, unexpected = load_model(model, str(folder / WEIGHTS_FILE), strict=False)
    loaded = {t.data_ptr() for k, t in model.state_dict().items() if k not in missing}
    missing = [k for k in missing if model.state_dict()[k].data_ptr() not in loaded]  # tied weights saved once
    if missing or unexpected:
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: does not fit the {type(model).__name__} converted by "
                              f"{config.name}; missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    if (folder / METHOD_STATE_FILE).is_file():
        load_method_state(method, folder)
    else:  # a model's own save_pretrained: the weights are exact, the sampler starts afresh
        warn(f"{folder / METHOD_STATE_FILE}: missing; the model is loaded exactly, but the method's state "
             "(its sampler) starts afresh: use sst.save_pretrained to keep it")
    watch_steps(model, method)
    return model, method


__all__ = ["from_pretrained", "merge_and_unload", "parameter_counts", "print_trainable_parameters",
           "save_pretrained"]
