"""Run-config dicts for end-to-end tests (imported by test modules), and a run's comparable log."""


def tiny_lm_config(out_dir, method=None, **train):
    """A run config dict for the tiny LM on the builtin corpus: seconds per run on a CPU."""
    return {
        "task": {"name": "lm", "model": "tiny", "seq_len": 32, "batch_size": 4, "vocab_size": 512,
                 "max_train_tokens": 60000},
        "method": method or {"name": "sst", "rank": 4, "resample_every": 3, "restart_warmup_steps": 2},
        "train": {"steps": 8, "lr": 3e-3, "warmup_steps": 2, "eval_batches": 2, "log_every": 1,
                  "progress": False, **train},
        "out_dir": str(out_dir),
        "seed": 0,
    }


def corpus_lm_config(corpus, out_dir, method: dict, model: str = "hf:llama-tiny", **train) -> dict:
    """A run config dict for a tiny LM (default the HF LLaMA) on a small corpus file, constant LR."""
    return {
        "task": {"name": "lm", "model": model, "data": [str(corpus)], "vocab_size": 300, "seq_len": 16,
                 "batch_size": 2, "val_fraction": 0.1, "cache_dir": str(corpus.parent / "cache")},
        "method": method,
        "train": {"steps": 4, "progress": False, "lr": 3e-3, "schedule": "constant", "eval_every": 0,
                  "keep_best": False, "log_every": 1, **train},
        "out_dir": str(out_dir),
    }


def timeless_records(run_dir):
    """metrics.jsonl of a run without its timings: equal for an uninterrupted and a resumed run."""
    from sst.train.logging import read_metrics

    return [{k: v for k, v in r.items() if k != "units_per_second"} for r in read_metrics(run_dir)]
