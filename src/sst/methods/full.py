"""Full-rank training: AdamW on every dense weight (the quality ceiling and memory reference)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sst.methods.base import MethodConfig, TrainingMethod


@dataclass
class FullConfig(MethodConfig):
    role: ClassVar[str] = "reference"

    name: str = "full"


class FullMethod(TrainingMethod):
    """No surgery, no events: the base behaviour."""
