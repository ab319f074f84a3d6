"""One training process per run directory: an exclusive ``fcntl.flock`` on ``RUN/.lock``.

The lock is held while ``train`` runs and released on return or exception; the kernel drops it
when its holder dies, however it dies, so a killed run never leaves a stale lock. The file holds
the holder's PID for the error message and is removed on release. Under DDP rank 0 takes the lock
(it alone writes the run directory) and every rank learns the outcome, so all fail together.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from sst.errors import CheckpointError
from sst.train import distributed

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

LOCK_FILE = ".lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def _in_use(run_dir: Path) -> CheckpointError:
    return CheckpointError(f"{run_dir} is in use by {_holder(run_dir / LOCK_FILE)} (another `sst train` on "
                           "this out_dir); wait for it to end or choose another out_dir")


class RunLock:
    """Context manager holding the lock of ``run_dir`` (created if missing, and removed again on
    release if it was created and is still empty)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None
        self.created = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or raise CheckpointError naming the holder; never waits."""
        self.created = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(f"cannot use {self.run_dir} as a run directory: {err.strerror or err}") from err
        if fcntl is None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise CheckpointError(f"cannot write in run directory {self.run_dir}: "
                                      f"{err.strerror or err}") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise _in_use(self.run_dir) from None
            # The previous holder removes the file on release: if it did so between our open and our
            # flock, we hold a lock on a file nobody else can see; take the lock of the new one instead.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still locked: nobody can lock the file we remove
            os.close(self.fd)
            self.fd = None
        if self.created:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only succeeds when nothing else was written


@contextlib.contextmanager
def hold_run_dir(run_dir: str | Path, dist: distributed.DistInfo) -> Iterator[None]:
    """Hold ``run_dir``'s lock on rank 0 for the duration; every rank raises if rank 0 cannot."""
    lock = RunLock(run_dir)
    error = None
    if dist.is_main:
        try:
            lock.acquire()
        except CheckpointError as err:
            error = err
    if not distributed.all_true(error is None, dist):
        raise error or CheckpointError(f"{run_dir}: rank 0 could not take the run directory's lock (see its error)")
    try:
        yield
    finally:
        lock.release()
