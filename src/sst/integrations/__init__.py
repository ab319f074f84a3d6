"""Bridges to other ecosystems: ``hf`` (transformers.Trainer), ``pretrained`` (PEFT-style save,
load, merge), ``lm_eval`` (lm-evaluation-harness). Each imports its optional package lazily."""
