"""Bad inputs through the real CLI: each one exits with status 2 and ONE line ``sst: error: ...``
on stderr that names the key, file or option at fault, and never a traceback.

The table covers config keys and values, data files, devices, output folders, sizes that cannot
fit, and the inference commands; two cases also run in a subprocess, where nothing can hide a
traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sst.sizing
from sst.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"
GIB = 2**30


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Small bad input files, by name."""
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "empty.txt").write_text("")
    (root / "blank.txt").write_text("\n \n\n")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (root / "one-doc.txt").write_text("a single document\nwith two lines and no blank line between\n")
    (root / "no-text-files").mkdir()
    (root / "a-file").write_text("not a folder\n")
    (root / "bad.yaml").write_text("task: [unclosed\n")
    (root / "list.yaml").write_text("- task\n- method\n")
    (root / "no-method.yaml").write_text("task: {name: lm}\n")
    misaligned = root / "mt-misaligned"  # a Multi30K-style folder whose train.en lacks a line
    misaligned.mkdir()
    for stem in ("train", "val", "test_2016_flickr"):
        (misaligned / f"{stem}.de").write_text("ein hund\neine katze\n")
        (misaligned / f"{stem}.en").write_text("a dog\n" if stem == "train" else "a dog\na cat\n")
    graph = root / "graph-bad-row"  # a user graph folder whose edge list has a malformed line
    graph.mkdir()
    (graph / "edges.csv").write_text("0,1\n1;2\n")
    (graph / "features.csv").write_text("1,0\n0,1\n1,1\n")
    (graph / "labels.csv").write_text("0\n1\n0\n")
    return {p.name: str(p) for p in root.iterdir()} | {"missing": str(root / "missing.txt"), "root": str(root)}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> str:
    """A finished 2-step run of the tiny LM (for eval, prune, generate and export)."""
    out = tmp_path_factory.mktemp("lm-run") / "run"
    assert main(["train", "tiny/lm", "train.steps=2", "train.progress=false", "--out", str(out)]) == 0
    return str(out)


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory) -> str:
    """A finished 1-step run of the tiny translation task (for eval --test-set)."""
    out = tmp_path_factory.mktemp("mt-run") / "run"
    assert main(["train", "tiny/translation", "train.steps=1", "train.progress=false", "--out", str(out)]) == 0
    return str(out)


def cli_error(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``sst ARGV`` in this process."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, names: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("sst: error: "), err
    assert names in lines[0], f"{names!r} not named in {lines[0]!r}"


TRAIN = "train.progress=false"
CUDA = torch.cuda.is_available()


def fill(argv: list[str], values: dict[str, str]) -> list[str]:
    """``argv`` with each ``{name}`` replaced by ``values[name]``."""
    for name, value in values.items():
        argv = [a.replace("{" + name + "}", str(value)) for a in argv]
    return argv


def case(name: str, argv: list[str], names: str, **kwargs):
    """One bad input: ``argv`` (``{file}`` placeholders name the files above), and what the
    error line must name."""
    return pytest.param(argv, names, id=name, **kwargs)


CASES = [
    # -- config keys and values
    case("unknown-key", ["train", "tiny/lm", "train.lrr=1"], "train.lrr"),
    case("unknown-section", ["train", "tiny/lm", "trian.lr=1"], "trian"),
    case("negative-lr", ["train", "tiny/lm", "train.lr=-1"], "train.lr"),
    case("nan-lr", ["train", "tiny/lm", "train.lr=nan"], "train.lr"),
    case("zero-steps", ["train", "tiny/lm", "train.steps=0"], "train.steps"),
    case("text-steps", ["train", "tiny/lm", "train.steps=abc"], "train.steps"),
    case("zero-grad-accum", ["train", "tiny/lm", "train.grad_accum=0"], "train.grad_accum"),
    case("zero-log-every", ["train", "tiny/lm", "train.log_every=0"], "train.log_every"),
    case("negative-eval-batches", ["train", "tiny/lm", "train.eval_batches=-1"], "train.eval_batches"),
    case("beta-above-one", ["train", "tiny/lm", "train.betas=[0.9,1.5]"], "train.betas[1]"),
    case("warmup-ratio-2", ["train", "tiny/lm", "train.warmup_ratio=2"], "train.warmup_ratio"),
    case("min-lr-ratio-5", ["train", "tiny/lm", "train.min_lr_ratio=5"], "train.min_lr_ratio"),
    case("unknown-schedule", ["train", "tiny/lm", "train.schedule=nosuch"], "train.schedule"),
    case("text-seed", ["train", "tiny/lm", "seed=abc"], "seed"),
    case("override-without-value", ["train", "tiny/lm", "task"], "'task'"),
    case("unknown-task", ["train", "tiny/lm", "task.name=nosuch"], "task.name"),
    case("unknown-method", ["train", "tiny/lm", "method.name=nosuch"], "method.name"),
    # -- devices
    case("nonsense-device", ["train", "tiny/lm", "train.device=gpu0"], "train.device"),
    case("device-index", ["train", "tiny/lm", "train.device=cuda:99"], "train.device"),
    case("cuda-without-cuda", ["train", "tiny/lm", "train.device=cuda"], "train.device",
         marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    case("meta-device", ["train", "tiny/lm", "train.device=meta"], "train.device"),
    # -- the LM task and its data
    case("seq-len-100000", ["train", "tiny/lm", "task.seq_len=100000"], "task.seq_len"),
    case("batch-size-1e9", ["train", "tiny/lm", "task.batch_size=1000000000"], "task.batch_size"),
    case("zero-seq-len", ["train", "tiny/lm", "task.seq_len=0"], "task.seq_len"),
    case("heads-do-not-divide", ["train", "tiny/lm", "task.n_heads=3"], "task.n_heads"),
    case("unknown-model", ["train", "tiny/lm", "task.model=nosuch"], "task.model"),
    case("tiny-vocabulary", ["train", "tiny/lm", "task.vocab_size=10"], "task.vocab_size"),
    case("val-fraction-1.5", ["train", "tiny/lm", "task.val_fraction=1.5"], "task.val_fraction"),
    case("unknown-data-scheme", ["train", "tiny/lm", "task.data=[foo:bar]"], "foo:bar"),
    case("no-data-source", ["train", "tiny/lm", "task.data=[]"], "task.data"),
    case("empty-text-file", ["train", "tiny/lm", "task.data=[{empty.txt}]"], "empty.txt"),
    case("blank-text-file", ["train", "tiny/lm", "task.data=[{blank.txt}]"], "blank.txt"),
    case("binary-file", ["train", "tiny/lm", "task.data=[{binary.txt}]"], "binary.txt"),
    case("one-document", ["train", "tiny/lm", "task.data=[{one-doc.txt}]"], "one-doc.txt"),
    case("missing-data-file", ["train", "tiny/lm", "task.data=[{missing}]"], "missing.txt"),
    case("folder-without-text", ["train", "tiny/lm", "task.data=[{no-text-files}]"], "no-text-files"),
    case("million-layers", ["train", "tiny/lm", "task.n_layers=1000000"], "GiB for parameters, gradients"),
    # -- methods
    case("rank-too-large", ["train", "tiny/lm", "method.rank=100"], "method.rank"),
    case("rank-zero", ["train", "tiny/lm", "method.rank=0"], "method.rank"),
    case("target-matches-nothing", ["train", "tiny/lm", "method.target_modules=[nosuch]"], "method.target_modules"),
    case("unknown-sampling", ["train", "tiny/lm", "method.sampling=bogus"], "method.sampling"),
    case("relora-zero-interval", ["train", "tiny/lm", "method.name=relora", "method.reset_every=0"],
         "method.reset_every"),
    case("tensorboard-missing", ["train", "tiny/lm", "train.tensorboard=true"], "train.tensorboard"),
    # -- the other tasks
    case("mt-heads", ["train", "tiny/translation", "task.n_heads=3"], "task.n_heads"),
    case("mt-max-tokens", ["train", "tiny/translation", "task.max_tokens=10"], "task.max_tokens"),
    case("mt-missing-corpus", ["train", "tiny/translation", "task.data=multi30k", "task.data_dir={missing}"],
         "task.data_dir"),
    case("mt-same-languages", ["train", "tiny/translation", "task.tgt_lang=de"], "task.tgt_lang"),
    case("mt-misaligned-lines", ["train", "tiny/translation", "task.data=multi30k", "task.data_dir={mt-misaligned}"],
         "misaligned train split: {mt-misaligned}/train.de has 2 lines but {mt-misaligned}/train.en has 1"),
    case("mt-unknown-test-set", ["train", "tiny/translation", "task.test_sets=[test_2099]"],
         "task.test_sets[0]: test set 'test_2099' not found"),
    case("graph-folder-bad-row", ["train", "tiny/node_classification", "task.dataset=path:{graph-bad-row}"],
         "graph-bad-row/edges.csv: line 2: expected two integer node ids"),
    case("nc-hidden-zero", ["train", "tiny/node_classification", "task.hidden=0"], "task.hidden"),
    case("nc-unknown-dataset", ["train", "tiny/node_classification", "task.dataset=nosuch"], "task.dataset"),
    case("lp-temperature-zero", ["train", "tiny/link_prediction", "task.t=0"], "task.t"),
    # -- config files, output folders, options
    case("no-such-preset", ["train", "nosuch/preset"], "nosuch/preset"),
    case("invalid-yaml", ["train", "{bad.yaml}"], "bad.yaml"),
    case("top-level-list", ["train", "{list.yaml}"], "list.yaml"),
    case("no-method-section", ["train", "{no-method.yaml}"], "'method'"),
    case("out-is-a-file", ["train", "tiny/lm", "--out", "{a-file}"], "out_dir"),
    case("out-below-a-file", ["train", "tiny/lm", "--out", "{a-file}/run"], "a-file"),
    case("resume-without-checkpoint", ["train", "tiny/lm", "--resume"], "no checkpoint"),
    case("unknown-option", ["train", "tiny/lm", "--no-such-option"], "--no-such-option"),
    case("missing-config-argument", ["train"], "config"),
    case("eval-missing-run", ["eval", "{missing}"], "missing.txt"),
    case("eval-unknown-split", ["eval", "{missing}", "--split", "train"], "--split"),
]


@pytest.mark.parametrize("argv, names", CASES)
def test_bad_input_is_one_clear_line(argv, names, files, tmp_path, capsys, monkeypatch):
    # Fixed free memory, so that the size check decides the same on every machine.
    monkeypatch.setattr(sst.sizing, "available_memory", lambda device: (16 * GIB, "test"))
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    argv, names = fill(argv, files), fill([names], files)[0]
    if argv[0] == "train" and len(argv) > 1:
        argv += [TRAIN] + ([] if "--out" in argv else ["--out", str(tmp_path / "run")])
    assert_one_line_error(*cli_error(argv, capsys), names)


def test_the_table_is_large_enough():
    assert len(CASES) >= 40


INFERENCE_CASES = [
    case("eval-test-split-of-lm", ["eval", "{run}", "--split", "test"], "only a 'val' split"),
    case("prune-test-split-of-lm", ["prune", "{run}", "--split", "test", "--ratios", "0"], "only a 'val' split"),
    case("prune-ratio-above-one", ["prune", "{run}", "--ratios", "0,1.2"], "[0, 1)"),
    case("eval-nonsense-device", ["eval", "{run}", "--device", "gpu0"], "--device"),
    case("generate-negative-top-k", ["generate", "{run}", "--top-k", "-1", "--max-new-tokens", "1"], "top_k"),
    case("export-lowrank-without-ratio", ["export", "{run}", "--out", "{out}", "--format", "lowrank"], "--ratio"),
    case("export-unknown-format", ["export", "{run}", "--out", "{out}", "--format", "onnx"], "--format"),
    case("export-ratio-one", ["export", "{run}", "--out", "{out}", "--ratio", "1.0"], "prune ratio"),
]


@pytest.mark.parametrize("argv, names", INFERENCE_CASES)
def test_bad_inference_input_is_one_clear_line(argv, names, lm_run, tmp_path, capsys):
    argv = fill(argv, {"run": lm_run, "out": tmp_path / "export"})
    assert_one_line_error(*cli_error(argv, capsys), names)


TEST_SET_CASES = [
    case("eval-unknown-test-set", ["--test-set", "test_2099"], "--test-set: test set 'test_2099' not found"),
    case("eval-misaligned-test-set", ["--test-set", "{mt-misaligned}/train"],
         "--test-set: test set '{mt-misaligned}/train' is misaligned: {mt-misaligned}/train.de has 2 lines"),
    case("eval-test-set-of-three-files", ["--test-set", "a.de,b.en,c.en"], "--test-set: test set ['a.de', 'b.en', "),
    case("eval-test-set-pair-missing-file", ["--test-set", "{mt-misaligned}/val.de,{missing}"],
         "missing.txt does not exist"),
]


@pytest.mark.parametrize("argv, names", TEST_SET_CASES)
def test_bad_test_set_is_one_clear_line(argv, names, mt_run, files, capsys):
    argv, names = fill(["eval", mt_run, *argv], files), fill([names], files)[0]
    assert_one_line_error(*cli_error(argv, capsys), names)


def test_read_only_output_folder(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root writes anywhere: let the OS answer as for a user
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    code, err = cli_error(["train", "tiny/lm", TRAIN, "--out", str(locked / "run")], capsys)
    assert_one_line_error(code, err, f"{locked} is not writable")
    assert not (locked / "run").exists()


@pytest.mark.parametrize("argv, names", [
    (["train", "tiny/lm", "train.device=gpu0"], "train.device"),
    (["train", "tiny/lm", "task.data=[{binary.txt}]"], "binary.txt"),
], ids=["device", "binary-data"])
def test_no_traceback_in_a_real_process(argv, names, files, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("SST_DEBUG", None)
    argv = fill(argv, files) + [TRAIN, "--out", str(tmp_path / "run")]
    proc = subprocess.run([sys.executable, "-m", "sst", *argv], capture_output=True, text=True, env=env,
                          timeout=300)
    assert_one_line_error(proc.returncode, proc.stderr, names)


def test_debug_flag_and_environment_show_the_traceback(tmp_path, capsys, monkeypatch):
    from sst.errors import ConfigError

    argv = ["train", "tiny/lm", "train.device=gpu0", "--out", str(tmp_path / "run")]
    with pytest.raises(ConfigError, match="train.device"):
        main(["--debug", *argv])
    with pytest.raises(ConfigError, match="train.device"):
        main([*argv, "--debug"])  # also after the command
    monkeypatch.setenv("SST_DEBUG", "1")
    with pytest.raises(ConfigError, match="train.device"):
        main(argv)
    monkeypatch.setenv("SST_DEBUG", "0")
    assert main(argv) == 2


def test_version(capsys):
    from importlib import metadata

    import sst

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == f"sst {metadata.version('sparse-spectral-training')}"
    assert out == f"sst {sst.__version__}"
