"""Atomic writes: the whole new content or the old file, never a partial or stray temporary file."""

import pytest

from sst import atomic
from sst.atomic import atomic_write_bytes, atomic_write_text


def test_writes_bytes_and_text_creating_parents(tmp_path):
    path = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    atomic_write_text(str(path), "d\u00e9j\u00e0 vu\n")  # str paths too; replaces the old file
    assert path.read_bytes() == "d\u00e9j\u00e0 vu\n".encode()
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", crash)  # fails after the data went into the temp file
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert list(tmp_path.iterdir()) == []

    monkeypatch.undo()
    atomic_write_text(path, "old")
    monkeypatch.setattr(atomic.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new content")
    assert path.read_text() == "old"  # the previous file is untouched
    assert list(tmp_path.iterdir()) == [path]


def test_unencodable_text_raises_before_touching_the_file(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "\u00e9", encoding="ascii")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]
