"""Checkpoint files: atomic saves, checksums, and fault injection at every file operation."""

import os
import shutil

import pytest
import torch
from torch import nn

import sst.checkpoint as ckpt
from faults import Crash, crash, die, instrument


def _model(value):
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def _save(path, value):
    return ckpt.save_checkpoint(path, _model(value), {"loop": {"step": int(value)}}, {"seed": 0})


def _loaded_step(path):
    restored = _model(0.0)
    state = ckpt.load_checkpoint(path, restored)
    assert float(restored.weight.detach()[0, 0]) == state["loop"]["step"]  # weights match their state
    return state["loop"]["step"]


def _hidden(root):
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last"
    ckpt.save_checkpoint(path, _model(1.0), {"loop": {"step": 1}}, {"seed": 0})

    def broken_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(ckpt.CheckpointError, match=r"the disk is full; the previous checkpoint .* is kept"):
        ckpt.save_checkpoint(path, _model(2.0), {"loop": {"step": 2}}, {"seed": 0})
    monkeypatch.undo()
    assert _loaded_step(path) == 1
    assert _hidden(tmp_path) == []  # no temporary folders left


def test_saves_are_numbered_folders_behind_a_link_and_old_ones_are_pruned(tmp_path):
    path = tmp_path / "last"
    for value in (1.0, 2.0, 3.0, 4.0):
        target = _save(path, value)
    assert path.is_symlink() and path.resolve() == target.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "last-000003", "last-000004"]
    assert _loaded_step(path) == 4 and ckpt.is_complete(path)
    best = tmp_path / "best"
    _save(best, 1.0)
    _save(best, 2.0)
    assert sorted(p.name for p in tmp_path.glob("best*")) == ["best", "best-000002"]


def test_older_layouts_still_load_and_are_replaced_on_the_next_save(tmp_path):
    path = tmp_path / "last"
    legacy = _save(tmp_path / "x", 1.0)
    (legacy / ckpt.MANIFEST_FILE).unlink()  # as written before manifests existed
    os.rename(legacy, tmp_path / "last.old")  # an interrupted swap of the old scheme
    assert ckpt.find_checkpoint(path) == tmp_path / "last.old" and _loaded_step(path) == 1
    shutil.copytree(tmp_path / "last.old", path)  # a plain folder, as the old scheme wrote
    assert ckpt.find_checkpoint(path) == path
    _save(path, 2.0)
    assert path.is_symlink() and _loaded_step(path) == 2
    assert not (tmp_path / "last.old").exists() and _hidden(tmp_path) == []


@pytest.mark.parametrize("name,problem", [("model.safetensors", "truncated or corrupt"),
                                          ("state.pt", "cannot be read")])
def test_a_flipped_byte_is_reported_as_corruption(tmp_path, name, problem):
    folder = _save(tmp_path / "last", 1.0)
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=f"{name}: {problem} .*SHA-256"):
        ckpt.load_checkpoint(tmp_path / "last", _model(0.0))


def test_weights_that_do_not_fit_name_the_problem(tmp_path):
    ckpt.save_checkpoint(tmp_path / "c", _model(1.0), {})
    with pytest.raises(ckpt.CheckpointError, match="does not fit this model"):
        ckpt.load_weights(tmp_path / "c", nn.Linear(4, 2))
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint at"):
        ckpt.load_checkpoint(tmp_path / "missing", _model(0.0))


# -- fault injection ---------------------------------------------------------------------------

def _ops_of_one_save(tmp_path, monkeypatch) -> int:
    _save(tmp_path / "probe" / "last", 1.0)
    _save(tmp_path / "probe" / "last", 2.0)
    count = instrument(monkeypatch, 0, crash)
    _save(tmp_path / "probe" / "last", 3.0)  # a save that also prunes
    monkeypatch.undo()
    return count["n"]


def _check_recovery(root, crashed_value):
    """After a crash in the save of ``crashed_value``: the newest complete checkpoint loads, the
    next save works, and nothing stale remains once resume has cleaned up."""
    path = root / "last"
    found = ckpt.find_checkpoint(path)
    assert found is not None
    assert _loaded_step(found) in (crashed_value - 1, crashed_value)
    ckpt.clean_stale(path, found)
    assert _loaded_step(ckpt.find_checkpoint(path)) in (crashed_value - 1, crashed_value)
    _save(path, 9.0)
    assert _loaded_step(path) == 9 and _hidden(root) == []


def test_an_exception_at_any_file_operation_of_a_save_loses_nothing(tmp_path, monkeypatch):
    n_ops = _ops_of_one_save(tmp_path, monkeypatch)
    assert n_ops >= 10
    for at in range(1, n_ops + 1):
        root = tmp_path / f"raise{at}"
        _save(root / "last", 1.0)
        _save(root / "last", 2.0)
        instrument(monkeypatch, at, crash)
        with pytest.raises(Crash):
            _save(root / "last", 3.0)
        monkeypatch.undo()
        _check_recovery(root, 3)


def test_a_kill_at_any_file_operation_of_a_save_loses_nothing(tmp_path, monkeypatch):
    n_ops = _ops_of_one_save(tmp_path, monkeypatch)
    for at in range(1, n_ops + 1):
        root = tmp_path / f"kill{at}"
        _save(root / "last", 1.0)
        _save(root / "last", 2.0)
        pid = os.fork()
        if pid == 0:  # the child dies with SIGKILL at operation ``at``: no cleanup code runs
            try:
                instrument(monkeypatch, at, die)
                _save(root / "last", 3.0)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9, at
        _check_recovery(root, 3)
