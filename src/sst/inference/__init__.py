"""Inference: merge factored layers to dense, singular-value pruning, PIFA, export, generation."""

from sst.inference.export import EXPORT_FORMATS, export_run, load_exported
from sst.inference.generate import generate_ids, generate_text
from sst.inference.loading import LoadedRun, load_run, resolve_checkpoint
from sst.inference.lowrank import (
    LayerRank,
    LowRankLinear,
    choose_rank,
    prunable_layers,
    prune_model,
    rank_for_energy,
    rank_for_ratio,
)
from sst.inference.merge import merge_model, mergeable_layers, unmergeable_layers
from sst.inference.pifa import PIFALinear
from sst.inference.pruning import prune_curve, prune_study

__all__ = [
    "EXPORT_FORMATS", "LayerRank", "LoadedRun", "LowRankLinear", "PIFALinear", "choose_rank", "export_run",
    "generate_ids", "generate_text", "load_exported", "load_run", "merge_model", "mergeable_layers",
    "prunable_layers", "prune_curve", "prune_model", "prune_study", "rank_for_energy", "rank_for_ratio",
    "resolve_checkpoint", "unmergeable_layers",
]
