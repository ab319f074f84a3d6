"""Sparse Spectral Training (SST): memory-efficient pre-training with SVD-parametrised weights.

    import sst
    model, method = sst.convert(model, sst.SSTConfig(rank=64))
    sst.print_trainable_parameters(model)
    sst.save_pretrained(model, method, "out")        # factors + method config and state
    model, method = sst.from_pretrained("out")       # back in one call
    plain = sst.merge_and_unload(model)              # plain nn.Linear layers
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
from sst.integrations.pretrained import from_pretrained, merge_and_unload, print_trainable_parameters, save_pretrained
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
    "from_pretrained",
    "load_config",
    "merge_and_unload",
    "merge_model",
    "print_trainable_parameters",
    "prune_model",
    "save_pretrained",
]
