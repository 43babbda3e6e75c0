"""A prediction table that mixes study cells, evaluated one cell at a time.

A study's ``predictions.parquet`` holds every dataset, label source, student and training size in one table.
Pooling them would mix gold and teacher runs into one meaningless alpha (and items of different datasets share
ids), so whichever of the grouping columns are present split the table into groups, each evaluated on its own:
one row per group, as in the report's Table 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from silverlabel.metrics.table import Evaluation, evaluate_table

__all__ = ["GROUP_COLUMNS", "GroupEvaluation", "evaluate_groups"]

GROUP_COLUMNS = ("dataset", "label_source", "student", "size")


@dataclass(frozen=True)
class GroupEvaluation:
    """One group's key (column -> value, in GROUP_COLUMNS order) and its evaluation."""

    key: dict[str, Any]
    evaluation: Evaluation

    def to_dict(self) -> dict[str, Any]:
        key = {k: v.item() if hasattr(v, "item") else v for k, v in self.key.items()}
        return {**key, **self.evaluation.to_dict()}


def evaluate_groups(df: pd.DataFrame, *, source: str = "table") -> list[GroupEvaluation]:
    """Evaluate each group of rows that share the grouping columns present (none present: one group, the table).

    Groups come in order of first appearance, so a study's table keeps its grid order.
    """
    by = [c for c in GROUP_COLUMNS if c in df.columns]
    if not by:
        return [GroupEvaluation({}, evaluate_table(df, source=source))]
    out = []
    for values, frame in df.groupby(by, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        key = dict(zip(by, values))
        where = ", ".join(f"{k}={v}" for k, v in key.items())
        out.append(GroupEvaluation(key, evaluate_table(frame, source=f"{source} [{where}]")))
    return out
