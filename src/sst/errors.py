"""The errors a user can cause, one type per kind; the CLI prints any ``SSTError`` as one line.

Each message names the key, file or row at fault and, where one exists, the way out.
"""

from __future__ import annotations


class SSTError(Exception):
    """Base of every user-facing error: bad input, not a bug."""


class ConfigError(SSTError, ValueError):
    """A configuration key or value is wrong; the message names the dotted key."""


class CheckpointError(SSTError, RuntimeError):
    """A checkpoint is missing, truncated, corrupt, or belongs to another configuration."""


class NonFiniteError(SSTError, RuntimeError):
    """Training produced a NaN or infinite loss, gradient, parameter or optimizer state."""
