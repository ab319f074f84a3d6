"""Learning-rate schedules as multiplicative factors of the peak LR.

factor(step) = warm-up (linear from 0) then cosine or linear decay to ``min_ratio``, constant,
or inverse-square-root (Noam): min(step / warmup, sqrt(warmup / step)). The loop multiplies it by
the method's own ``lr_multiplier`` (the per-iteration re-warm-up of SST and ReLoRA*).
"""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["cosine", "linear", "constant", "inverse_sqrt"]


def lr_factor(step: int, total: int, warmup: int, schedule: Schedule, min_ratio: float = 0.1) -> float:
    """Factor for the update that follows ``step`` completed optimizer steps (0-based)."""
    s = step + 1
    if schedule == "inverse_sqrt":
        w = max(warmup, 1)
        return min(s / w, math.sqrt(w / s))
    if warmup > 0 and s <= warmup:
        return s / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (s - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_ratio + (1 - min_ratio) * (1 - progress)
    raise ValueError(f"unknown schedule {schedule!r}")
