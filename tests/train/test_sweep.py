"""Comparison protocol: per-method sweeps chosen on validation only, edge flags, seeds, epochs."""

import math

import pytest
import yaml
from runconfigs import tiny_lm_config

from sst.config import build_config
from sst.errors import ConfigError, UsageError
from sst.train import sweep
from sst.train.compare import indistinguishable, load_tuned, protocol_lines, run_comparison


def test_parse_sweep_reads_numbers_and_rejects_bad_text():
    assert sweep.parse_sweep(["train.lr=1e-3,3e-3", "method.resample_every=25,100"]) == {
        "train.lr": [0.001, 0.003], "method.resample_every": [25, 100]}
    for bad in (["train.lr"], ["lr=1,2"], ["train.lr=1,1"], ["train.lr="]):
        with pytest.raises(ConfigError, match="--sweep"):
            sweep.parse_sweep(bad)


def test_a_key_the_method_lacks_is_dropped_for_that_method(tmp_path):
    lora = build_config(tiny_lm_config(tmp_path, {"name": "lora", "rank": 2}))
    values = {"train.lr": [1e-3, 1e-2], "method.resample_every": [25, 100]}
    assert sweep.applicable(values, lora) == {"train.lr": [1e-3, 1e-2]}
    assert len(sweep.cells(sweep.applicable(values, build_config(tiny_lm_config(tmp_path))))) == 4
    cell = {"train.lr": 0.01, "method.resample_every": 25}
    changed = sweep.with_cell(build_config(tiny_lm_config(tmp_path)), cell)
    assert changed.train.lr == 0.01 and changed.method.resample_every == 25
    assert sweep.cell_label(cell) == "lr=0.01,resample_every=25"


def test_a_method_grid_replaces_the_shared_grid_for_that_method_only(tmp_path):
    values = sweep.parse_sweep(["train.lr=1e-3,1e-2", "sst:train.lr=3e-2,1e-1", "sst:method.resample_every=25,50"])
    assert values["sst:train.lr"] == [0.03, 0.1]
    lora = build_config(tiny_lm_config(tmp_path, {"name": "lora", "rank": 2}))
    sst_cfg = build_config(tiny_lm_config(tmp_path))
    assert sweep.applicable(values, lora) == {"train.lr": [1e-3, 1e-2]}
    assert sweep.applicable(values, sst_cfg) == {"train.lr": [0.03, 0.1], "method.resample_every": [25, 50]}
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        sweep.parse_sweep(["nope:train.lr=1,2"])
    with pytest.raises(ConfigError, match="must start with"):
        sweep.parse_sweep(["sst:lr=1,2"])


def test_the_choice_uses_the_validation_metric_only():
    # test_* is better in the first cell, val_* in the second: the second must win.
    results = [{"val_f1": 0.60, "test_f1": 0.95}, {"val_f1": 0.70, "test_f1": 0.10},
               {"val_f1": float("nan"), "test_f1": 0.99}]
    assert sweep.choose(results, "val_f1", higher_is_better=True) == 1
    assert sweep.choose([{"val_loss": 2.0}, {"val_loss": 1.5}], "val_loss", False) == 1
    assert sweep.choose([{"val_loss": float("nan")}], "val_loss", False) is None


def test_edge_of_the_grid_is_flagged():
    grid = {"train.lr": [1e-3, 3e-3, 1e-2], "method.sampling": ["uniform", "top"]}
    assert sweep.at_edge(grid, {"train.lr": 1e-2, "method.sampling": "top"}) == ["train.lr"]
    assert sweep.at_edge(grid, {"train.lr": 1e-3}) == ["train.lr"]
    assert sweep.at_edge(grid, {"train.lr": 3e-3}) == []


def test_distinguishability_rule():
    summary = [{"method": "a", "mean": 10.0, "std": 1.0, "seeds": 3},
               {"method": "b", "mean": 11.5, "std": 0.2, "seeds": 3},  # 1.5 < 2 x 1.0
               {"method": "c", "mean": 14.0, "std": 0.5, "seeds": 3},  # 4.0 > 2 x 1.0
               {"method": "d", "mean": 10.1, "std": 0.0, "seeds": 1}]  # one seed: no claim
    assert indistinguishable(summary) == [["a", "b"]]


def test_a_sweep_runs_every_cell_chooses_on_validation_and_repeats_seeds(tmp_path):
    cfg = build_config(tiny_lm_config(tmp_path / "unused", steps=3))
    report = run_comparison(cfg, ["full", "sst"], tmp_path / "cmp", rank=2, seeds=[0, 1],
                            sweep_values={"train.lr": [1e-3, 1e-2]})
    cells = report["sweep"]["cells"]
    assert len(cells) == 4 and sum(c["chosen"] for c in cells) == 2
    for name in ("full", "sst"):
        mine = [c for c in cells if c["method"] == name]
        best = min(mine, key=lambda c: c["val_loss"])
        assert best["chosen"] and report["sweep"]["chosen"][name]["cell"] == best["cell"]
        runs = [r for r in report["runs"] if r["method"] == name]
        assert [r["seed"] for r in runs] == [0, 1] and all(r["cell"] == best["cell"] for r in runs)
    assert (tmp_path / "cmp" / "sst" / "lr=0.01" / "seed1" / "results.json").is_file()
    assert report["out_dir"] == str(tmp_path / "cmp") and report["config"]["out_dir"] == str(tmp_path / "cmp")
    text = (tmp_path / "cmp" / "report.md").read_text()
    assert "### Sweep" in text and "at the edge of the sweep" in text and "Seeds [0, 1]" in text
    # the chosen cells, read back as fixed per-method values
    assert load_tuned(tmp_path / "cmp" / "results.json") == {
        m: report["sweep"]["chosen"][m]["cell"] for m in ("full", "sst")}
    # finished cells are reused: a second call trains nothing and agrees
    again = run_comparison(cfg, ["full", "sst"], tmp_path / "cmp", rank=2, seeds=[0, 1],
                           sweep_values={"train.lr": [1e-3, 1e-2]})
    assert again["summary"] == report["summary"]


def test_runs_past_one_epoch_are_warned_about():
    report = {
        "metric": "val_ppl", "higher_is_better": False, "runs": [], "diverged": {}, "gap_reduction": None,
        "summary": [{"method": "full", "mean": 1.0, "std": 0.0, "seeds": 1, "epochs": 2.5},
                    {"method": "sst", "mean": 1.0, "std": 0.0, "seeds": 1, "epochs": 0.5}]}
    text = "\n".join(protocol_lines(report))
    assert "full saw its training data 2.50 times" in text and "sst saw" not in text


def test_per_method_grids_run_their_own_cells_and_flag_their_own_edges(tmp_path):
    cfg = build_config(tiny_lm_config(tmp_path / "unused", steps=2))
    values = sweep.parse_sweep(["train.lr=1e-3,2e-3", "sst:train.lr=4e-3,8e-3,1.6e-2"])
    report = run_comparison(cfg, ["full", "sst"], tmp_path / "cmp", rank=2, sweep_values=values)
    lrs = {name: sorted(c["cell"]["train.lr"] for c in report["sweep"]["cells"] if c["method"] == name)
           for name in ("full", "sst")}
    assert lrs == {"full": [1e-3, 2e-3], "sst": [4e-3, 8e-3, 1.6e-2]}
    assert report["sweep"]["chosen"]["sst"]["grid"] == {"train.lr": [4e-3, 8e-3, 1.6e-2]}
    text = "\n".join(protocol_lines(report))
    assert "| method | train.lr |" in text  # one column for the shared and the per-method key
    for name, choice in report["sweep"]["chosen"].items():
        if choice["edge"]:
            assert f"{name}'s best train.lr ({choice['cell']['train.lr']:g}) is at the edge of the sweep " \
                   f"{lrs[name]}" in text


def test_tuned_values_are_applied_per_method(tmp_path):
    cfg = build_config(tiny_lm_config(tmp_path / "unused", steps=2))
    tuned = {"full": {"train.lr": 0.002}, "sst": {"train.lr": 0.004}}
    report = run_comparison(cfg, ["full", "sst"], tmp_path / "cmp", rank=2, tuned=tuned)
    assert [r["method"] for r in report["runs"]] == ["full", "sst"]
    for name, value in (("full", 0.002), ("sst", 0.004)):
        saved = yaml.safe_load((tmp_path / "cmp" / name / "config.yaml").read_text())
        assert saved["train"]["lr"] == value
    assert "fixed from an earlier sweep" in (tmp_path / "cmp" / "report.md").read_text()
    with pytest.raises(ConfigError, match="--tuned"):
        load_tuned(tmp_path / "nothing.json")


def test_tuning_on_several_seeds_chooses_on_their_mean_validation(tmp_path, monkeypatch):
    from sst.train import compare
    from sst.train.loop import NonFiniteLossError

    val = {(1e-3, 0): 1.0, (1e-3, 1): 3.0, (1e-2, 0): 1.5, (1e-2, 1): 1.5, (1e-1, 0): 0.5}
    trained = []

    def fake(cfg, resume=False):  # stands in for training: a validation loss per (lr, seed)
        trained.append((cfg.train.lr, cfg.seed))
        if (cfg.train.lr, cfg.seed) == (1e-1, 1):
            raise NonFiniteLossError("training loss became nan at step 2")
        loss = val.get((cfg.train.lr, cfg.seed), 2.0)
        return {"method": cfg.method.name, "rank": None, "metric": "test_loss", "selection_metric": "val_loss",
                "higher_is_better": False, "val_loss": loss, "test_loss": loss + cfg.seed,
                "trainable_params": 1, "total_params": 1, "optimizer_state_bytes": 0,
                "tokens_per_second": 1.0, "svd_seconds": 0.0, "train_seconds": 1.0, "loss_history": [(1, loss)]}

    monkeypatch.setattr(compare, "train", fake)
    cfg = build_config(tiny_lm_config(tmp_path / "unused", steps=2))
    lrs = {"train.lr": [1e-3, 1e-2, 1e-1]}
    report = run_comparison(cfg, ["full"], tmp_path / "two", seeds=[0, 1, 2], sweep_values=lrs, tune_seeds=2)
    # seed 0 alone would pick 1e-1 (diverges at seed 1) or 1e-3; the mean over seeds 0, 1 picks 1e-2
    assert report["sweep"]["chosen"]["full"] == {"cell": {"train.lr": 1e-2}, "edge": [], "grid": lrs}
    assert [(r["seed"], r["cell"]["train.lr"]) for r in report["runs"]] == [(0, 1e-2), (1, 1e-2), (2, 1e-2)]
    assert sorted(trained) == sorted([(lr, s) for lr in lrs["train.lr"] for s in (0, 1)] + [(1e-2, 2)])
    assert len(report["sweep"]["cells"]) == 6 and sum(c["chosen"] for c in report["sweep"]["cells"]) == 2
    assert report["summary"][0]["mean"] == pytest.approx((1.5 + 2.5 + 4.0) / 3)  # test_loss = val_loss + seed
    one = run_comparison(cfg, ["full"], tmp_path / "one", seeds=[0], sweep_values=lrs)
    assert one["sweep"]["chosen"]["full"]["cell"] == {"train.lr": 1e-1}  # default: tuned on seed 0 only
    with pytest.raises(UsageError, match=r"tune_seeds: must be in \[1, 2\]"):
        run_comparison(cfg, ["full"], tmp_path / "bad", seeds=[0, 1], sweep_values=lrs, tune_seeds=3)


def test_curves_are_averaged_over_seeds_on_the_steps_they_share():
    from sst.train.compare import _mean_band

    steps, mean, low, high = _mean_band([[(10, 1.0), (20, 3.0), (30, 5.0)], [(10, 3.0), (20, 5.0)]])
    assert steps == [10, 20] and mean == [2.0, 4.0]
    assert low == pytest.approx([2.0 - 2 ** 0.5, 4.0 - 2 ** 0.5]) and high == pytest.approx([2 + 2 ** 0.5, 4 + 2 ** 0.5])


def test_each_run_records_its_validation_curve(tmp_path):
    cfg = build_config(tiny_lm_config(tmp_path / "unused", steps=4))
    cfg.train.eval_every = 2
    report = run_comparison(cfg, ["full"], tmp_path / "cmp", seeds=[0, 1])
    for run in report["runs"]:
        assert [step for step, _ in run["val_history"]] == [2, 4]
        best = min(run["val_history"], key=lambda sv: sv[1])  # the loop's best validation step
        assert best[0] == run["best_step"] and all(math.isfinite(v) for _, v in run["val_history"])
    assert (tmp_path / "cmp" / "loss_curves.png").stat().st_size > 10_000
