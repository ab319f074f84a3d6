"""The errors a user can cause, one type per kind; the CLI prints any ``SSTError`` as one line.
``RunWarning`` (and ``warn``) is the one warning type for what does not stop a run.

Each message names the key, file or row at fault and, where one exists, the way out. Each type
also derives from the built-in error it refines (ValueError, FileNotFoundError, ...), so code that
catches the built-in keeps working.
"""

from __future__ import annotations

import importlib
import warnings


class SSTError(Exception):
    """Base of every user-facing error: bad input, not a bug."""


class ConfigError(SSTError, ValueError):
    """A configuration key or value is wrong (also a device or a size that cannot fit); the message
    names the dotted key."""


class UsageError(SSTError, ValueError):
    """A command-line option or function argument is wrong (``--split``, ``--ratio``, ``top_k``)."""


class DataError(SSTError, ValueError):
    """A data file or source is empty, not text, malformed or too small; the message names it."""


class MissingDataError(DataError, FileNotFoundError):
    """A data file or folder does not exist (or a streamed source cannot be reached)."""


class DependencyError(SSTError, ImportError):
    """An optional package that a setting needs is not installed; the message says how to install it."""


def require_package(*modules: str, message: str):
    """Import ``modules`` (a package and any submodules it needs) and return the first; a
    ``DependencyError`` carrying ``message`` (how to install it) when one is missing."""
    try:
        found = [importlib.import_module(name) for name in modules]
    except ImportError as err:
        raise DependencyError(message) from err
    return found[0]


class CheckpointError(SSTError, RuntimeError):
    """A checkpoint is missing, truncated, corrupt, or belongs to another configuration."""


class NonFiniteError(SSTError, RuntimeError):
    """Training produced a NaN or infinite loss, gradient, parameter or optimizer state."""


class RunWarning(UserWarning):
    """Something about a run the user should know that does not stop it."""


def warn(message: str) -> None:
    """Issue a ``RunWarning`` (the CLI shows it as one ``sst: warning:`` line)."""
    warnings.warn(message, RunWarning, stacklevel=2)
