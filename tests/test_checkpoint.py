import pytest
import torch
from torch import nn

import sst.checkpoint as ckpt


def _model(value):
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last"
    ckpt.save_checkpoint(path, _model(1.0), {"loop": {"step": 1}}, {"seed": 0})

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, _model(2.0), {"loop": {"step": 2}}, {"seed": 0})
    monkeypatch.undo()
    restored = _model(0.0)
    state = ckpt.load_checkpoint(path, restored)
    assert state["loop"]["step"] == 1 and float(restored.weight.detach()[0, 0]) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temporary folders left


def test_an_interrupted_swap_falls_back_to_the_old_copy(tmp_path):
    path = tmp_path / "last"
    ckpt.save_checkpoint(path, _model(1.0), {"loop": {"step": 1}})
    path.rename(tmp_path / "last.old")  # as if the process died between the two renames
    assert ckpt.find_checkpoint(path) == tmp_path / "last.old"
    assert ckpt.load_checkpoint(path, _model(0.0))["loop"]["step"] == 1


def test_weights_that_do_not_fit_name_the_problem(tmp_path):
    ckpt.save_checkpoint(tmp_path / "c", _model(1.0), {})
    with pytest.raises(ckpt.CheckpointError, match="does not fit this model"):
        ckpt.load_weights(tmp_path / "c", nn.Linear(4, 2))
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint at"):
        ckpt.load_checkpoint(tmp_path / "missing", _model(0.0))
