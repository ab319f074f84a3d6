"""Atomic file writes: readers see the old file or the complete new one, never a torn one.

write(path) = write a hidden temporary file beside ``path``, fsync it, os.replace it onto
``path`` (atomic on POSIX and Windows within one file system), then fsync the folder so the
rename survives a crash. If anything raises, the temporary file is removed and ``path`` is
untouched. Standard library only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Best-effort fsync of folder ``path`` (persists renames in it); silent where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by a file holding ``data``, creating missing parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` by a file holding ``text`` encoded with ``encoding`` (no newline translation)."""
    atomic_write_bytes(path, text.encode(encoding))
