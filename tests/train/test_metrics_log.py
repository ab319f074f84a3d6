"""metrics.jsonl on resume: the records written before the checkpoint are kept (by count; by step
for checkpoints of older versions), torn or corrupt lines are dropped with a warning."""

import json

import pytest

from sst.train.logging import MetricsLogger, RunWarning, read_metrics


def _write(run_dir, lines):
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))


RECORDS = [json.dumps({"step": s, "kind": k, "loss": 1.0}) for s, k in [(1, "train"), (2, "train"), (2, "eval"),
                                                                         (3, "train")]]


def test_resume_keeps_the_records_written_before_the_checkpoint(tmp_path):
    _write(tmp_path, RECORDS)
    logger = MetricsLogger(tmp_path)
    logger.resume(step=2, records=2)  # saved after the train record of step 2, before its evaluation
    assert [(r["step"], r["kind"]) for r in read_metrics(tmp_path)] == [(1, "train"), (2, "train")]
    logger.log(2, "eval", {"loss": 2.0})
    assert logger.records == 3 and read_metrics(tmp_path)[-1]["loss"] == 2.0


def test_checkpoints_without_a_record_count_keep_records_by_step(tmp_path):
    _write(tmp_path, RECORDS)
    MetricsLogger(tmp_path).resume(step=2)
    assert [(r["step"], r["kind"]) for r in read_metrics(tmp_path)] == [(1, "train"), (2, "train"), (2, "eval")]


@pytest.mark.parametrize("bad", ['{"step": 2, "kind": "tra', "\x00\x00\x00", "[1, 2]", '{"kind": "train"}'])
def test_torn_or_corrupt_lines_are_dropped_with_a_warning(tmp_path, bad):
    _write(tmp_path, [RECORDS[0], bad, RECORDS[1]])
    with pytest.warns(RunWarning, match=r"metrics.jsonl: dropped 1 torn or corrupt line\(s\) \(line 2\)"):
        assert len(read_metrics(tmp_path)) == 2
    logger = MetricsLogger(tmp_path)
    with pytest.warns(RunWarning, match="dropped 1"):
        logger.resume(step=2, records=2)
    assert (tmp_path / "metrics.jsonl").read_text() == RECORDS[0] + "\n" + RECORDS[1] + "\n"


def test_a_fresh_run_starts_a_new_log(tmp_path):
    _write(tmp_path, RECORDS)
    logger = MetricsLogger(tmp_path)
    logger.start()
    logger.log(1, "train", {"loss": 3.0})
    assert read_metrics(tmp_path) == [{"step": 1, "kind": "train", "loss": 3.0}]
