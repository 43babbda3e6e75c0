"""silverlabel: label text with an LLM teacher, train a small student on it, and measure what that costs.

The public API is imported lazily, so ``import silverlabel`` stays fast and optional backends (llama.cpp,
Hugging Face datasets) are only needed by the code that uses them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "SilverlabelError": "errors",
    "Dataset": "data", "Splits": "splits", "load_dataset": "data", "load_preset": "data", "split": "splits",
    "PRESETS": "data",
    "TrainConfig": "config", "StudyConfig": "config", "load_study_config": "config",
    "Prompt": "teachers", "get_teacher": "teachers", "sample_demonstrations": "teachers",
    "Teacher": "teachers", "register_teacher": "teachers", "TeacherOptions": "teachers",
    "AnnotationStore": "cache",
    "train_student": "students", "StudentRun": "students", "register_student": "students",
    "get_student": "students",
    "register_policy": "mitigations", "register_preset": "data", "Preset": "data",
    "evaluate_table": "metrics", "accuracy": "metrics", "macro_f1": "metrics", "krippendorff_alpha": "metrics",
    "p_unchanged": "metrics", "pairwise_churn": "metrics",
    "run_study": "study", "demo_config": "study", "write_study_report": "reporting",
    "apply_policy": "mitigations", "GoldOracle": "mitigations",
    "predict": "corpus", "PredictSummary": "corpus",
    "estimate": "inference", "Estimand": "estimands", "make_estimand": "estimands",
    "register_estimand": "estimands", "HypothesisSpec": "config", "evaluate_hypothesis": "multiverse",
    "Configuration": "multiverse",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'silverlabel' has no attribute '{name}'")
