"""Extra translation test sets (task.test_sets, sst eval --test-set) and the recorded data root."""

import json
import shutil
import warnings

import pytest

from sst.cli import main
from sst.config import ConfigError, build_config
from sst.data import translation as mt
from sst.errors import DataError, MissingDataError, UsageError
from sst.tasks.translation import TranslationTask, TranslationTaskConfig
from sst.train.loop import train

pytest.importorskip("sacrebleu")

TINY = dict(vocab_size=64, d_model=32, n_layers=1, n_heads=2, dropout=0.0, max_tokens=256, max_len=16,
            bleu_max_sentences=30)


def corpus_with_extra_sets(root, seed=0):
    """A synthetic Multi30K folder plus test_2017_flickr (a copy of val), a prefix pair and a file pair."""
    corpus = mt.write_synthetic_corpus(root / "multi30k", sizes=(600, 40, 40), seed=seed)
    for lang in ("de", "en"):
        shutil.copy(corpus / f"val.{lang}.gz", corpus / f"test_2017_flickr.{lang}.gz")
    other = root / "other"
    other.mkdir()
    val = {lang: mt.read_lines(corpus / f"val.{lang}.gz") for lang in ("de", "en")}
    for lang, lines in val.items():
        (other / f"newstest.{lang}").write_text("\n".join(lines[:10]) + "\n")
    (other / "mine.de.txt").write_text("\n".join(val["de"][10:20]) + "\n")
    (other / "mine.en.txt").write_text("\n".join(val["en"][10:20]) + "\n")
    return corpus, other


def test_test_sets_are_scored_with_bleu_and_perplexity(tmp_path):
    corpus, other = corpus_with_extra_sets(tmp_path)
    specs = ["test_2017_flickr", str(other / "newstest"), [str(other / "mine.de.txt"), str(other / "mine.en.txt")]]
    config = TranslationTaskConfig(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), test_sets=specs, **TINY)
    task = TranslationTask(config, seed=0, run_dir=tmp_path / "run")
    assert task.test_set_keys == ["test_2017_flickr", "test_newstest", "test_mine_de"]
    assert task.describe()["sentences"]["test_newstest"] == 10
    model = task.build_model()
    final = task.final_metrics(model)
    for key in task.test_set_keys:
        assert {f"{key}_loss", f"{key}_ppl", f"{key}_bleu"} <= set(final)
    val = task.evaluate(model, "val")
    # test_2017_flickr is a copy of val: the same numbers, so the right files were scored
    assert final["test_2017_flickr_loss"] == pytest.approx(val["val_loss"])
    assert final["test_2017_flickr_bleu"] == pytest.approx(val["val_bleu"])
    assert final["test_newstest_ppl"] != pytest.approx(final["test_2017_flickr_ppl"])
    # scoring a set again by another spelling of the same files reuses it
    assert task.evaluate_test_set(model, str(corpus / "test_2017_flickr")) == pytest.approx(
        {k: v for k, v in final.items() if k.startswith("test_2017_flickr")})
    with pytest.raises(UsageError, match=r"unknown split 'train': the translation task has \['val', 'test', "
                                         r"'test_2017_flickr', 'test_newstest', 'test_mine_de'\]"):
        task.evaluate(model, "train")


def test_test_set_errors(tmp_path):
    corpus, other = corpus_with_extra_sets(tmp_path)
    base = dict(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), **TINY)
    with pytest.raises(ConfigError, match=r"task.test_sets\[1\]: a pair must be \[source file, target file\]"):
        TranslationTaskConfig(test_sets=["test_2017_flickr", ["a.de"]], **base)
    with pytest.raises(ConfigError, match=r"task.test_sets\[0\]: empty"):
        TranslationTaskConfig(test_sets=[" "], **base)
    with pytest.raises(MissingDataError, match=r"^task.test_sets\[0\]: test set 'test_2018_flickr' not found; "
                                              r"tried .*test_2018_flickr.de"):
        TranslationTask(TranslationTaskConfig(test_sets=["test_2018_flickr"], **base), 0, tmp_path / "run")
    (other / "newstest.en").write_text("one line\n")
    with pytest.raises(DataError, match=r"^task.test_sets\[0\]: test set '.*newstest' is misaligned: .*newstest.de "
                                       r"has 10 lines but .*newstest.en has 1 \(line 2 of .*newstest.de has no"):
        TranslationTask(TranslationTaskConfig(test_sets=[str(other / "newstest")], **base), 0, tmp_path / "run")
    (other / "test_2017_flickr.de").write_text("a\n")
    (other / "test_2017_flickr.en").write_text("b\n")
    clash = ["test_2017_flickr", str(other / "test_2017_flickr")]
    with pytest.raises(ConfigError, match=r"task.test_sets\[1\]: .* its name 'test_2017_flickr' is taken by .*multi30k"):
        TranslationTask(TranslationTaskConfig(test_sets=clash, **base), 0, tmp_path / "run")


def _run_config(out, data_dir="", **task):
    return build_config({
        "task": {"name": "translation", "data_dir": data_dir, "cache_dir": str(out.parent / "cache"), **TINY, **task},
        "method": {"name": "full"},
        "train": {"steps": 2, "lr": 1e-3, "warmup_steps": 1, "eval_batches": 1, "progress": False},
        "out_dir": str(out),
    })


def test_run_records_test_sets_and_data_root_and_eval_warns_on_another(tmp_path, monkeypatch, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    corpus, other = corpus_with_extra_sets(a)
    shutil.copytree(a, b)  # the same files under another root
    corpus_with_extra_sets(c, seed=1)  # other files
    monkeypatch.setenv("SST_DATA_DIR", str(a))
    run = tmp_path / "run"
    results = train(_run_config(run, test_sets=["test_2017_flickr"]))
    assert {"test_2017_flickr_bleu", "test_2017_flickr_ppl", "test_bleu"} <= set(results)
    saved = json.loads((run / "results.json").read_text())
    assert saved["task"]["data_root"] == str(corpus.resolve())
    assert saved["test_2017_flickr_bleu"] == results["test_2017_flickr_bleu"]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same root: no warning
        assert main(["eval", str(run), "--test-set", "test_2017_flickr", "--test-set", str(other / "newstest")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"test_2017_flickr_bleu", "test_2017_flickr_ppl", "test_newstest_bleu", "test_newstest_ppl"} <= set(printed)
    assert printed["test_2017_flickr_bleu"] == pytest.approx(results["test_2017_flickr_bleu"])
    pair = f"{other / 'mine.de.txt'},{other / 'mine.en.txt'}"
    assert main(["eval", str(run), "--test-set", pair]) == 0
    assert "test_mine_de_bleu" in json.loads(capsys.readouterr().out)

    monkeypatch.setenv("SST_DATA_DIR", str(b))
    with pytest.warns(UserWarning, match=r"trained on data in .*a/multi30k, but this task reads .*b/multi30k.*identical"):
        assert main(["eval", str(run), "--max-batches", "1"]) == 0
    monkeypatch.setenv("SST_DATA_DIR", str(c))
    with pytest.warns(UserWarning, match=r"c/multi30k.*training files differ, so the BPE vocabulary differs"):
        assert main(["eval", str(run), "--max-batches", "1"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("SST_DATA_DIR", str(a))
    assert main(["eval", str(run), "--test-set", "test_2019_none"]) == 2
    assert "test set 'test_2019_none' not found" in capsys.readouterr().err


def test_test_set_option_on_a_task_without_test_sets(tmp_path, capsys):
    run = tmp_path / "graph"
    train(build_config({
        "task": {"name": "node_classification", "dataset": "disease_tree", "tree_nodes": 40},
        "method": {"name": "full"}, "train": {"steps": 1, "progress": False}, "out_dir": str(run)}))
    assert main(["eval", str(run), "--test-set", "test_2017_flickr"]) == 2
    assert "--test-set: the node_classification task has no extra test sets" in capsys.readouterr().err
