"""Sparse Spectral Training (SST): memory-efficient pre-training with SVD-parametrised weights.

    import sst
    model, method = sst.convert(model, sst.SSTConfig(rank=64))
"""

from sst.config import ConfigError, RunConfig, TrainConfig, load_config
from sst.methods import (
    CoLAConfig,
    FiraConfig,
    FullConfig,
    GaLoreConfig,
    LoRAConfig,
    LoRALinear,
    ReLoRAConfig,
    SLTrainConfig,
    SSTConfig,
    TargetError,
    TrainingMethod,
    build_method,
    convert,
)
from sst.inference.lowrank import prune_model
from sst.inference.merge import merge_model
from sst.spectral import SpectralLinear

__version__ = "0.1.0"

__all__ = [
    "CoLAConfig",
    "ConfigError",
    "FiraConfig",
    "FullConfig",
    "GaLoreConfig",
    "LoRAConfig",
    "LoRALinear",
    "ReLoRAConfig",
    "RunConfig",
    "SLTrainConfig",
    "SSTConfig",
    "SpectralLinear",
    "TargetError",
    "TrainConfig",
    "TrainingMethod",
    "build_method",
    "convert",
    "load_config",
    "merge_model",
    "prune_model",
]
