import pytest

from sst.train.compare import gap_reduction, markdown_report, method_config
from sst.methods import ReLoRAConfig, SSTConfig


def test_gap_reduction_lower_and_higher_is_better():
    assert gap_reduction({"full": 20.0, "lora": 30.0, "relora": 32.0, "sst": 22.0}, False) == pytest.approx(0.8)
    assert gap_reduction({"full": 25.0, "lora": 20.0, "relora": 15.0, "sst": 24.0}, True) == pytest.approx(0.8)
    assert gap_reduction({"full": 20.0, "sst": 22.0}, False) is None


def test_method_config_shares_rank_targets_and_interval():
    base = SSTConfig(rank=8, resample_every=50, target_modules=["q_proj"])
    relora = method_config(base, "relora", rank=4)
    assert isinstance(relora, ReLoRAConfig)
    assert (relora.rank, relora.reset_every, relora.target_modules) == (4, 50, ["q_proj"])
    assert method_config(base, "galore", None).proj_update_every == 50


def _report(scores, higher=False):
    runs = [{"method": m, "rank": 4, "val_loss": 1.0, "trainable_params": 10, "total_params": 20,
             "optimizer_state_bytes": 0, "peak_memory_bytes": 0, "tokens_per_second": 1.0,
             "svd_seconds": 0.0, "train_seconds": 1.0} for m in scores]
    summary = [{"method": m, "mean": v, "std": 0.0, "seeds": 1} for m, v in scores.items()]
    return {"metric": "val_ppl", "higher_is_better": higher, "runs": runs, "summary": summary,
            "gap_reduction": gap_reduction(scores, higher)}


def test_report_warns_when_full_rank_is_no_ceiling():
    fine = markdown_report(_report({"full": 20.0, "lora": 30.0, "sst": 22.0}))
    assert "80.0%" in fine and "no ceiling" not in fine
    odd = markdown_report(_report({"full": 31.0, "lora": 30.0, "sst": 22.0}))
    assert "full-rank did not beat" in odd


def test_report_shows_the_measured_cpu_peak_its_breakdown_and_ratio_to_full_rank():
    report = _report({"full": 20.0, "lora": 30.0, "sst": 22.0})
    for i, run in enumerate(report["runs"]):
        run.update({"peak_memory_bytes": (4 - i) * 2**20, "peak_memory_source": "cpu_rss_high_water",
                    "trainable_param_bytes": 3 * 2**19, "frozen_bytes": i * 2**20, "grad_bytes": 3 * 2**19,
                    "optimizer_state_bytes": 2**20, "saved_activation_bytes": 2**18})
    text = markdown_report(report)
    assert "n/a" not in text.split("### Memory")[0]  # the main table shows the CPU peak
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    memory_rows = [line for line in text.split("### Memory")[1].splitlines() if line.startswith("| sst")]
    assert memory_rows == ["| sst | 1.50 | 2.00 | 1.50 | 1.00 | 0.25 | 2.00 | 0.50 |"]
    assert "| 4.00 |" in rows["full"]
    assert "Peak memory from: cpu_rss_high_water." in text and "one after another" in text


def test_report_of_runs_without_the_breakdown_shows_dashes():
    text = markdown_report(_report({"full": 20.0, "sst": 22.0}))
    assert "| sst | - | - | - | 0.00 | - | n/a | - |" in text
    assert "Peak memory from: not recorded." in text
