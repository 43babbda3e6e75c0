"""Metrics for students trained on LLM labels: per-run classification scores and stability across runs.

``classification`` scores one run against gold, ``stability`` compares runs with each other, and ``table`` reads
the tidy (item, run, pred, gold) prediction table and summarises it into an :class:`Evaluation`.
"""

from silverlabel.metrics.classification import accuracy, macro_f1, per_class
from silverlabel.metrics.stability import (
    krippendorff_alpha,
    p_unchanged,
    pairwise_churn,
    per_class_p_unchanged,
)
from silverlabel.metrics.table import (
    Evaluation,
    evaluate_table,
    read_prediction_table,
    validate_prediction_table,
)

__all__ = [
    "Evaluation",
    "accuracy",
    "evaluate_table",
    "krippendorff_alpha",
    "macro_f1",
    "p_unchanged",
    "pairwise_churn",
    "per_class",
    "per_class_p_unchanged",
    "read_prediction_table",
    "validate_prediction_table",
]

from silverlabel.metrics.bootstrap import bootstrap_intervals  # noqa: E402

__all__ += ["bootstrap_intervals"]
from silverlabel.metrics.scaling import PLATEAU_METHOD, detect_plateau  # noqa: E402

__all__ += ["PLATEAU_METHOD", "detect_plateau"]
from silverlabel.metrics.groups import GROUP_COLUMNS, GroupEvaluation, evaluate_groups  # noqa: E402

__all__ += ["GROUP_COLUMNS", "GroupEvaluation", "evaluate_groups"]
