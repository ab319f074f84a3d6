"""Export a trained run for inference without the training method.

dense: merged weights (W = U diag(S) Vh, W0 + BA, ...) as a safetensors state dict of the plain
model class the task builds; lowrank: the singular-value-pruned model (LowRankLinear layers) plus
``lowrank.json`` with each layer's kept rank; hf: ``save_pretrained`` of the merged Hugging Face
model (our LLaMA becomes ``LlamaForCausalLM``) with the tokenizer and the end-of-text id as bos/eos,
loadable by ``from_pretrained`` without ``sst``; pifa: the pruned model with every truncated layer
in PIFA form (k pivot rows and coefficients, ``pifa.json``); cola: a CoLA run's model with its
CoLALinear layers kept as A, B and bias (y = B SiLU(A x) + b has no dense weight), ``cola.json``
with each layer's shape and rank. The other formats refuse CoLA layers and name this one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from safetensors.torch import load_model, save_model
from torch import nn

from sst.errors import ConfigError, UsageError
from sst.config import build_config
from sst.inference.cola_form import cola_layers, cola_model, cola_shapes
from sst.inference.loading import LoadedRun, load_run
from sst.inference.lowrank import LayerRank, lowrank_model, prune_model
from sst.inference.merge import merge_model, require_mergeable
from sst.inference.pifa import pifa_from_lowrank, pifa_model
from sst.models.hf import hf_llama_from_ours
from sst.models.llama import LlamaModel
from sst.tasks import build_task
from sst.checkpoint import BEST, LAST, SHARDS_DIR, STATE_FILE, CheckpointError, find_checkpoint

ExportFormat = Literal["dense", "lowrank", "hf", "pifa", "cola"]
EXPORT_FORMATS = ("dense", "lowrank", "hf", "pifa", "cola")
FACTORED_FORMATS = ("lowrank", "pifa")  # kept factored, so they need --ratio or --energy
MODEL_FILE, CONFIG_FILE, INFO_FILE, RANKS_FILE, PIFA_FILE, COLA_FILE, TOKENIZER_FILE = (
    "model.safetensors", "config.yaml", "export.json", "lowrank.json", "pifa.json", "cola.json", "tokenizer.json",
)


def is_hf_model(model: nn.Module) -> bool:
    return hasattr(model, "save_pretrained") and hasattr(model, "config")


def prepare_for_export(
    run: LoadedRun, format: ExportFormat = "dense", ratio: float | None = None, energy: float | None = None,
) -> dict[str, LayerRank]:
    """Turn ``run.model`` in place into what ``format`` stores; -> per-layer ranks (empty: no pruning).

    With ``ratio`` or ``energy`` the singular values are pruned first; the dense and hf formats then
    store the truncated weights as plain nn.Linear (same function as the low-rank model). cola keeps
    the CoLALinear layers and takes no ratio or energy; every other format refuses them.
    """
    if format not in EXPORT_FORMATS:
        raise UsageError(f"export format must be one of {list(EXPORT_FORMATS)}, got {format!r}")
    if format == "cola":
        _prepare_cola(run, ratio, energy)
        return {}
    _refuse_cola_layers(run.model, format)
    if format == "hf" and not (is_hf_model(run.model) or isinstance(run.model, LlamaModel)):
        raise UsageError(
            f"--format hf needs a language model (our LLaMA or task.model 'hf:...'); "
            f"{run.checkpoint} holds a {type(run.model).__name__}: use --format dense"
        )
    if format in FACTORED_FORMATS and ratio is None and energy is None:
        raise UsageError(f"--format {format} needs --ratio or --energy (which singular values to keep)")
    require_mergeable(run.model, run.task.build_model, f"a {format} export")
    ranks = {}
    if ratio is not None or energy is not None:
        cfg = run.config.method
        ranks = prune_model(run.model, ratio=ratio, energy=energy,
                            target_modules=cfg.target_modules, exclude_modules=cfg.exclude_modules,
                            always_factor=format == "pifa")
    if format == "pifa":
        ranks = pifa_from_lowrank(run.model, ranks)
    if format not in FACTORED_FORMATS:
        merge_model(run.model)
    if format == "hf" and isinstance(run.model, LlamaModel):
        run.model = hf_llama_from_ours(run.model)
    return ranks


def _refuse_cola_layers(model: nn.Module, format: str) -> None:
    """ConfigError naming --format cola if ``model`` holds CoLALinear layers (no dense weight)."""
    layers = list(cola_layers(model))
    if layers:
        shown = ", ".join(repr(n) for n in layers[:3]) + (", ..." if len(layers) > 3 else "")
        raise ConfigError(
            f"a {format} export: {len(layers)} layer(s) ({shown}) are CoLALinear (y = B SiLU(A x) + b, no dense "
            f"weight to merge or prune): use --format cola, which keeps each layer's A, B and bias"
        )


def _prepare_cola(run: LoadedRun, ratio: float | None, energy: float | None) -> None:
    """Check that ``run.model`` fits the cola format and merge its other factored layers in place."""
    if ratio is not None or energy is not None:
        raise UsageError("--format cola keeps every CoLA layer whole (A, B and bias; no singular values "
                         "to prune): drop --ratio/--energy")
    shapes = cola_shapes(run.model)
    if not shapes:
        raise UsageError(f"--format cola needs CoLALinear layers (a method.name: cola run); {run.checkpoint} "
                         f"holds none: use --format dense")
    merge_model(run.model)
    # The export reads back as the task's plain model with these layers swapped in: nothing else may differ.
    require_mergeable(run.model, lambda: cola_model(run.task.build_model(), shapes), "a cola export")


def _save_tokenizer(run: LoadedRun, out: Path) -> Path | None:
    """Copy the task's tokenizer (LM tasks) beside the weights; None when the task has none."""
    data = getattr(run.task, "data", None)
    tokenizer = getattr(data, "tokenizer", None)
    if tokenizer is None:
        return None
    tokenizer.save(str(out / TOKENIZER_FILE))
    return out / TOKENIZER_FILE


def _save_hf(run: LoadedRun, out: Path) -> None:
    """save_pretrained of the model and tokenizer; bos = eos = our ``<|endoftext|>`` id, which
    separates (starts and ends) every training document; no pad id (padding_idx would freeze it)."""
    data = getattr(run.task, "data", None)
    tokenizer = getattr(data, "tokenizer", None)
    if tokenizer is not None:
        from sst.data.tokenizer import EOT

        eot = tokenizer.token_to_id(EOT)
        for config in (run.model.config, getattr(run.model, "generation_config", None)):
            if config is not None:
                config.bos_token_id = config.eos_token_id = eot
                config.pad_token_id = None
    run.model.save_pretrained(str(out))
    if tokenizer is not None:
        from transformers import PreTrainedTokenizerFast

        PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOT, bos_token=EOT).save_pretrained(str(out))


def refuse_checkpoint_folder(out: Path) -> None:
    """Raise CheckpointError if ``out`` is (or lies inside) a checkpoint folder or is a run folder:
    an export there would overwrite the files that training, --resume and inference read."""
    out = out.resolve()
    for folder in (out, *out.parents):
        weights = (folder / MODEL_FILE).is_file() or (folder / SHARDS_DIR).is_dir()
        if weights and (folder / STATE_FILE).is_file():
            raise CheckpointError(f"--out {out}: {folder} is a checkpoint folder; exporting into it would "
                                  "overwrite its files: choose another output folder")
    if (out / CONFIG_FILE).is_file() and any(find_checkpoint(out / name) for name in (LAST, BEST)):
        raise CheckpointError(f"--out {out} is a training run folder; exporting into it would overwrite its "
                              "files: choose another output folder (a new subfolder of it is fine)")


def export_run(
    checkpoint: str | Path, out_dir: str | Path, format: ExportFormat = "dense",
    ratio: float | None = None, energy: float | None = None,
) -> Path:
    """Export a run or checkpoint directory to ``out_dir``; returns ``out_dir``.

    Writes model.safetensors (dense/lowrank/pifa/cola) or the HF files (hf), plus config.yaml (the
    run config), export.json (what was done) and, for lowrank and pifa, lowrank.json or pifa.json
    (per-layer ranks), for cola cola.json (per-layer shapes and ranks). Refuses (CheckpointError)
    an ``out_dir`` that holds a run or a checkpoint.
    """
    refuse_checkpoint_folder(Path(out_dir))
    run = load_run(checkpoint)
    ranks = prepare_for_export(run, format, ratio, energy)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_config = (run.checkpoint / CONFIG_FILE) if (run.checkpoint / CONFIG_FILE).is_file() else run.run_dir / CONFIG_FILE
    (out / CONFIG_FILE).write_text(run_config.read_text())
    if format == "hf":
        _save_hf(run, out)
    else:
        save_model(run.model, str(out / MODEL_FILE))
        _save_tokenizer(run, out)
    if format in FACTORED_FORMATS:
        ranks_file = RANKS_FILE if format == "lowrank" else PIFA_FILE
        (out / ranks_file).write_text(json.dumps({n: r.as_dict() for n, r in ranks.items()}, indent=2))
    if format == "cola":
        shapes = {n: shape.as_dict() for n, shape in cola_shapes(run.model).items()}
        (out / COLA_FILE).write_text(json.dumps(shapes, indent=2))
    info = {
        "format": format,
        "source": str(run.checkpoint),
        "task": run.config.task.name,
        "method": run.config.method.name,
        "model_class": f"{type(run.model).__module__}.{type(run.model).__qualname__}",
        "ratio": ratio,
        "energy": energy,
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "pruned_layers": len(ranks),
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2))
    return out


def load_exported(export_dir: str | Path) -> nn.Module:
    """Rebuild a dense, lowrank, pifa or cola export: the task's plain model class (with the recorded
    low-rank, PIFA or CoLA layers swapped in), weights loaded strictly."""
    export_dir = Path(export_dir)
    for needed in (CONFIG_FILE, MODEL_FILE):
        if not (export_dir / needed).is_file():
            raise CheckpointError(f"{export_dir / needed}: missing; is {export_dir} an export of sst "
                                  "(dense, lowrank, pifa or cola)?")
    config = build_config(yaml.safe_load((export_dir / CONFIG_FILE).read_text()))
    task = build_task(config.task, config.seed, export_dir)
    model = task.build_model()
    if (export_dir / RANKS_FILE).is_file():
        lowrank_model(model, json.loads((export_dir / RANKS_FILE).read_text()))
    if (export_dir / PIFA_FILE).is_file():
        pifa_model(model, json.loads((export_dir / PIFA_FILE).read_text()))
    if (export_dir / COLA_FILE).is_file():
        cola_model(model, json.loads((export_dir / COLA_FILE).read_text()), str(export_dir / COLA_FILE))
    missing, unexpected = load_model(model, str(export_dir / MODEL_FILE), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{export_dir / MODEL_FILE}: does not fit {type(model).__name__}; missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return model.eval()
