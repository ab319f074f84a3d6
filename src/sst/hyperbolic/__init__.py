"""Hyperbolic geometry in the Lorentz model: pure functions, a manifold object and HyboNet layers.

Points live on -x_0^2 + |x_1:|^2 = -K (K > 0); layers keep an ordinary ``nn.Linear`` inside so that
training methods can replace it by module surgery exactly as in Euclidean models.
"""

from sst.hyperbolic import math
from sst.hyperbolic.layers import LorentzAggregation, LorentzCentroid, LorentzLinear
from sst.hyperbolic.manifold import Lorentz
from sst.hyperbolic.math import (
    InputValidation,
    centroid,
    check_on_manifold,
    dist,
    expmap,
    expmap0,
    is_on_manifold,
    logmap,
    logmap0,
    lorentz_norm,
    manifold_residual,
    minkowski_inner,
    normalize_to_hyperboloid,
    origin,
    parallel_transport,
    project,
    project_tangent,
    sq_dist,
    validate_inputs,
    validation_enabled,
)

__all__ = [
    "InputValidation",
    "Lorentz",
    "LorentzAggregation",
    "LorentzCentroid",
    "LorentzLinear",
    "centroid",
    "check_on_manifold",
    "dist",
    "expmap",
    "expmap0",
    "is_on_manifold",
    "logmap",
    "logmap0",
    "lorentz_norm",
    "manifold_residual",
    "math",
    "minkowski_inner",
    "normalize_to_hyperboloid",
    "origin",
    "parallel_transport",
    "project",
    "project_tangent",
    "sq_dist",
    "validate_inputs",
    "validation_enabled",
]
