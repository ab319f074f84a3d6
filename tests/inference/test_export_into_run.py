"""An export never writes into a run folder or a checkpoint folder (it would overwrite the weights
that training, --resume and inference read there); a new subfolder of a run is fine."""

from __future__ import annotations

import pytest

from sst.checkpoint import CheckpointError
from sst.cli import main
from sst.inference.export import export_run


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("where", "says"), [
    ("", "is a training run folder"),
    ("last", "is a checkpoint folder"),
    ("best", "is a checkpoint folder"),
    ("last/inside", "is a checkpoint folder"),
])
def test_export_into_a_run_or_checkpoint_folder_is_refused(sst_run, where, says):
    before = _files(sst_run)
    with pytest.raises(CheckpointError, match=says):
        export_run(sst_run, sst_run / where)
    assert _files(sst_run) == before


def test_the_cli_refuses_it_in_one_line(sst_run, capsys):
    assert main(["export", str(sst_run), "--out", str(sst_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sst: error: --out ") and "training run folder" in err and "\n" not in err


def test_a_new_subfolder_of_a_run_is_fine(sst_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sst_run, run, symlinks=True)
    assert export_run(run, run / "export") == run / "export"
    assert (run / "export" / "model.safetensors").is_file()
