"""The SVD-parametrised layer and its pure functions (torch only)."""

from sst.spectral.factored import FactoredLinear
from sst.spectral.functional import (
    SAMPLING_MODES,
    SamplingMode,
    compose,
    sample_indices,
    sampling_probabilities,
    svd_factors,
)
from sst.spectral.linear import SpectralLinear

__all__ = [
    "FactoredLinear",
    "SAMPLING_MODES",
    "SamplingMode",
    "SpectralLinear",
    "compose",
    "sample_indices",
    "sampling_probabilities",
    "svd_factors",
]
