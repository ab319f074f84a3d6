"""Stop requests: SIGINT (Ctrl-C) and SIGTERM (what schedulers send before a kill) end a run cleanly.

While ``StopSignals`` is active the first of them only records its number; the loop finishes the
optimizer step, writes a checkpoint and raises ``TrainingInterrupted``. A second SIGINT raises
KeyboardInterrupt at once. A stopped run exits with 128 + signal number (130 for SIGINT, 143 for
SIGTERM), as a shell reports a process that signal ended.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint; ``exit_code`` is 128 + ``signum``."""

    def __init__(self, step: int, checkpoint: Path, signum: int):
        super().__init__(f"interrupted at step {step}; checkpoint {checkpoint} written; resume with --resume")
        self.step, self.checkpoint, self.signum = step, checkpoint, signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Context manager: SIGINT/SIGTERM set ``signum`` instead of ending the process.

    Handlers are installed only in the main thread (elsewhere Python cannot install them, and the
    signals keep their previous meaning); the previous handlers come back on exit.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            # None: the handler was not installed from Python; the default is the closest we can restore.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt("a second interrupt: stopped at once, without a checkpoint")
        if self.signum is None:
            self.signum = signum
            # os.write, not print: the handler may run while the main thread is inside a print.
            os.write(2, f"sst: {signal.Signals(signum).name} received: stopping after this step "
                        "(Ctrl-C again to stop at once)\n".encode())
