"""Fault injection for the checkpoint save path: crash or die at the n-th file operation."""

import os
import shutil

import sst.checkpoint as ckpt


class Crash(BaseException):
    """Stands for the process dying at that instruction (no ``except Exception`` catches it)."""


# Every file operation the save sequence performs, patched where it is looked up.
FILE_OPS = [(os, "rename"), (os, "replace"), (os, "symlink"), (os, "fsync"), (shutil, "rmtree"),
            (ckpt, "save_model"), (ckpt.torch, "save"), (ckpt, "fsync_dir"), (ckpt.json, "dump")]


def instrument(monkeypatch, at: int, action) -> dict:
    """Call ``action`` before the ``at``-th file operation (1-based; 0: never); count all of them."""
    count = {"n": 0}
    for owner, name in FILE_OPS:
        real = getattr(owner, name)

        def wrapper(*args, _real=real, **kwargs):
            count["n"] += 1
            if count["n"] == at:
                action()
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)
    return count


def crash() -> None:
    raise Crash


def die() -> None:
    os.kill(os.getpid(), 9)
