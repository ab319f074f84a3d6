"""Where derived data (tokenizers, token arrays, synthetic corpora) is cached, and under what name.

Folder: the explicit ``cache_dir``, else ``$SST_CACHE_DIR``, else the first writable of
``$XDG_CACHE_HOME/sst`` and ``~/.cache/sst``, else ``<tmp>/sst-cache``. File names carry
``cache_key(parts)`` = the first 16 hex digits of sha256(repr(parts)).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def default_cache_dir(cache_dir: str | Path = "") -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$SST_CACHE_DIR`` (both ``~``-expanded, used
    as they are), else ``$XDG_CACHE_HOME/sst`` or ``~/.cache/sst``, whichever is first creatable
    and writable (it is created), else ``<tmp>/sst-cache`` (no usable home, as in some CI sandboxes).
    An empty ``cache_dir`` or environment variable counts as unset."""
    chosen = str(cache_dir) or os.environ.get("SST_CACHE_DIR", "")
    if chosen:
        return Path(chosen).expanduser()
    candidates = []
    if os.environ.get("XDG_CACHE_HOME"):
        candidates.append(Path(os.environ["XDG_CACHE_HOME"]) / "sst")
    try:
        candidates.append(Path.home() / ".cache" / "sst")
    except RuntimeError:  # no HOME and no passwd entry
        pass
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    return Path(tempfile.gettempdir()) / "sst-cache"


def cache_key(*parts: object) -> str:
    """A short stable hex digest of ``parts`` (their ``repr``), for cache file names."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
