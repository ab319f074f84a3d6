"""Run logging: metrics as JSON lines (``metrics.jsonl``), optional TensorBoard, run warnings.

One record per line, appended whole. A checkpoint stores how many records were written before it,
so a resumed run keeps exactly those and rewrites the rest; a torn or corrupt line (what a crash
or a full disk leaves) is dropped with a ``RunWarning`` instead of stopping the reader.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

from sst.atomic import atomic_write_text
from sst.errors import RunWarning, warn  # noqa: F401  (re-exported: the loop's warnings)

METRICS_FILE = "metrics.jsonl"


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show ``RunWarning``s as ``sst: warning: ...`` on stderr (other warnings as usual)."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, RunWarning):
                print(f"sst: warning: {message}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning
        yield


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _parse(path: Path) -> list[dict]:
    """The valid records of ``path`` in order; each torn or corrupt line is dropped with a warning."""
    records, bad = [], []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int) and isinstance(record.get("kind"), str):
            records.append(record)
        else:
            bad.append(number)
    if bad:
        warn(f"{path}: dropped {len(bad)} torn or corrupt line(s) (line {', '.join(map(str, bad[:5]))})")
    return records


class MetricsLogger:
    """Appends one JSON object per record; mirrors scalars to TensorBoard when asked and installed.

    ``records`` counts the records logged so far (on every rank, so checkpoints agree).
    """

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = False):
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self.records = 0
        self.writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:  # tensorboard is optional
                    SummaryWriter = None
                if SummaryWriter is not None:
                    self.writer = SummaryWriter(str(Path(run_dir) / "tb"))

    def log(self, step: int, kind: str, values: dict[str, Any]) -> None:
        self.records += 1
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, **{k: _clean(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")  # one write: a crash leaves at most one torn line
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(f"{kind}/{k}", v, step)

    def start(self) -> None:
        """A fresh run: forget what an earlier attempt without a checkpoint logged here."""
        self.records = 0
        if self.enabled:
            self.path.unlink(missing_ok=True)

    def resume(self, step: int, records: int | None = None) -> None:
        """Keep what was logged before the checkpoint a run resumes from: its first ``records``
        records (checkpoints of older versions: the records up to ``step``); the resumed run
        rewrites the rest. Torn or corrupt lines are dropped with a warning."""
        self.records = records or 0
        if not self.enabled or not self.path.exists():
            return
        found = _parse(self.path)
        keep = found[:records] if records is not None else [r for r in found if r["step"] <= step]
        if records is not None and len(keep) < records:
            warn(f"{self.path}: holds {len(keep)} records, the checkpoint at step {step} was written "
                 f"after {records}; the missing ones are not rewritten")
        self.records = len(keep)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: Path, kind: str | None = None) -> list[dict]:
    """The records of ``run_dir``/metrics.jsonl (of one ``kind``); corrupt lines are skipped with a warning."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [r for r in _parse(path) if kind is None or r["kind"] == kind]
