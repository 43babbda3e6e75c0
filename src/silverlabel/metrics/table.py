"""The tidy prediction table (one row per item and run) and the evaluation summarised from it.

Columns: ``item`` (test item id), ``run`` (seed / run id), ``pred`` (the student's label), ``gold`` (the gold label,
the same for an item in every run). Other columns are allowed and ignored.

Label types: a float column whose values are all whole numbers (1.0, 2.0) becomes ints. When ``pred`` and ``gold``
then hold different kinds of value (ints in one and strings in the other, or a column mixing 1 and "1"), both are
compared as strings, with whole floats written as ints, so 1, 1.0 and "1" are one label. ``item`` and ``run`` are
normalised the same way, each on its own.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from silverlabel.errors import SilverlabelError
from silverlabel.files import read_table
from silverlabel.metrics.classification import _macro_from, _per_run_prfs
from silverlabel.metrics.stability import (
    krippendorff_alpha,
    p_unchanged,
    pairwise_churn,
    per_class_p_unchanged,
)

__all__ = ["Evaluation", "evaluate_table", "read_prediction_table", "validate_prediction_table"]

logger = logging.getLogger(__name__)

COLUMNS = ("item", "run", "pred", "gold")
_PREDICTION_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
# Kinds of value (pandas.api.types.infer_dtype) that compare and sort among themselves without surprises.
_PLAIN_KINDS = {"integer", "string", "boolean"}
_NUMERIC_KINDS = {"integer", "floating", "mixed-integer-float", "decimal"}


def read_prediction_table(path: str | Path) -> pd.DataFrame:
    """Read a prediction table from .csv, .tsv, .parquet or .pq (chosen by extension); not validated here.
    Read by :func:`silverlabel.files.read_table`, with numbers inferred (the seed and size columns are numbers)."""
    path = Path(path)
    if path.suffix.lower() not in _PREDICTION_SUFFIXES:
        raise SilverlabelError(
            f"{path}: unknown extension {path.suffix!r}; save the prediction table as .csv, .tsv, .parquet or .pq"
        )
    if not path.exists():
        raise SilverlabelError(f"{path}: prediction table not found; check the path")
    if not path.is_file():
        raise SilverlabelError(f"{path}: not a file; pass the prediction table file, not a folder")
    return read_table(path, strings=False)


def _integral_floats_to_int(col: pd.Series) -> pd.Series:
    """1.0, 2.0 -> 1, 2, so a float column read from CSV matches an int column elsewhere."""
    if pd.api.types.is_float_dtype(col) and col.notna().all():
        values = col.to_numpy(dtype=float)
        if np.isfinite(values).all() and (values == np.round(values)).all():
            return col.astype("int64")
    return col


def _kind(col: pd.Series) -> str:
    return pd.api.types.infer_dtype(col, skipna=True)


def _as_str(col: pd.Series) -> pd.Series:
    """Each value's string form, with integral floats written as ints (1.0 -> "1") so they match 1 and "1"."""
    codes, uniques = pd.factorize(col)  # convert the few distinct values, not every row
    as_str = np.array(
        [str(int(u)) if isinstance(u, (float, np.floating)) and float(u).is_integer() else str(u) for u in uniques],
        dtype=object,
    )
    return pd.Series(as_str[codes], index=col.index, dtype=object)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """The four columns with label/id types made comparable (see the module docstring)."""
    out = df.loc[:, list(COLUMNS)].reset_index(drop=True)
    for name in COLUMNS:
        out[name] = _integral_floats_to_int(out[name])
    for name in ("item", "run"):
        if _kind(out[name]) not in _PLAIN_KINDS | {"floating"}:
            out[name] = _as_str(out[name])
    kinds = (_kind(out["pred"]), _kind(out["gold"]))
    same_plain = kinds[0] == kinds[1] and kinds[0] in _PLAIN_KINDS
    both_numeric = kinds[0] in _NUMERIC_KINDS and kinds[1] in _NUMERIC_KINDS
    if not (same_plain or both_numeric):
        logger.info("pred is %s but gold is %s; comparing labels as strings", *kinds)
        out["pred"] = _as_str(out["pred"])
        out["gold"] = _as_str(out["gold"])
    return out


def _fmt(value: Any) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


@dataclass(frozen=True)
class _Coded:
    """A validated table as integer codes: what evaluate_table works on."""

    tidy: pd.DataFrame
    runs: list[Any]
    items: list[Any]
    labels: list[Any]
    preds: np.ndarray  # (n_runs, n_items) label codes
    gold: np.ndarray  # (n_items,) label codes


def validate_prediction_table(df: pd.DataFrame, *, source: str = "table") -> pd.DataFrame:
    """Check the table can be evaluated; return its four columns with label types normalised.

    ``source`` (a path or a name) starts every error message so the user knows which table to fix. Row numbers
    in messages are 0-based positions in the table (for a CSV with a header, file line = row + 2).
    """
    return _code_table(df, source=source).tidy


def _code_table(df: pd.DataFrame, *, source: str) -> _Coded:
    """Validate ``df`` and build the code matrix in one pass; checks work on integer codes to stay vectorised."""
    if not isinstance(df, pd.DataFrame):
        raise SilverlabelError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        present = ", ".join(repr(str(c)) for c in df.columns) or "none"
        raise SilverlabelError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} (columns present: {present}); "
            "the table needs columns item, run, pred, gold"
        )
    if len(df) == 0:
        raise SilverlabelError(f"{source}: the table has no rows; it needs one row per (item, run)")
    null = df.loc[:, list(COLUMNS)].isna().to_numpy()
    if null.any():
        row, col = np.argwhere(null)[0]
        raise SilverlabelError(
            f"{source}: missing value in column {COLUMNS[col]!r} at row {row} "
            f"(item {_fmt(df['item'].iat[row])}, run {_fmt(df['run'].iat[row])}); fill it or drop the row"
        )
    tidy = _normalise(df)
    n_rows = len(tidy)
    run_codes, runs = _sorted_codes(tidy["run"])
    item_codes, items = _sorted_codes(tidy["item"])
    label_codes, labels = _sorted_codes(pd.concat([tidy["pred"], tidy["gold"]], ignore_index=True))
    pred_codes, gold_codes = label_codes[:n_rows], label_codes[n_rows:]
    n_runs, n_items = len(runs), len(items)

    # Duplicates: a repeated (run, item) key; report the first repeat in table order, as DataFrame.duplicated would.
    key = run_codes * n_items + item_codes
    order = np.argsort(key, kind="stable")
    repeats = order[1:][key[order][1:] == key[order][:-1]]
    if repeats.size:
        row = int(repeats.min())
        raise SilverlabelError(
            f"{source}: item {_fmt(items[item_codes[row]])} appears more than once in run "
            f"{_fmt(runs[run_codes[row]])} (row {row}); keep one prediction per (item, run)"
        )

    gold = np.empty(n_items, dtype=np.intp)
    gold[item_codes] = gold_codes  # one of each item's gold codes; any row that disagrees is a conflict
    conflict = gold[item_codes] != gold_codes
    if conflict.any():
        item_code = item_codes[int(np.argmax(conflict))]
        golds = sorted({labels[g] for g in gold_codes[item_codes == item_code]}, key=str)
        raise SilverlabelError(
            f"{source}: item {_fmt(items[item_code])} has different gold labels across runs "
            f"({', '.join(map(_fmt, golds))}); an item's gold label must be the same in every run"
        )

    per_run = np.bincount(run_codes, minlength=n_runs)
    short = np.flatnonzero(per_run < n_items)
    if short.size:
        r = int(short[0])
        seen = np.zeros(n_items, dtype=bool)
        seen[item_codes[run_codes == r]] = True
        raise SilverlabelError(
            f"{source}: run {_fmt(runs[r])} lacks {n_items - per_run[r]} of {n_items} items "
            f"(first missing: item {_fmt(items[int(np.argmin(seen))])}); every run must predict every item"
        )

    preds = np.empty((n_runs, n_items), dtype=np.intp)
    preds[run_codes, item_codes] = pred_codes
    return _Coded(tidy=tidy, runs=runs, items=items, labels=labels, preds=preds, gold=gold)


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """Codes 0..k-1 in sorted order of the distinct values, and those values as Python objects. The values always
    sort together: :func:`_normalise` turned every column of mixed kinds into strings."""
    codes, uniques = pd.factorize(values, sort=True)
    return np.asarray(codes, dtype=np.intp), list(uniques.tolist())


@dataclass(frozen=True)
class Evaluation:
    """Accuracy, macro F1 and stability of one study cell (one student config over several runs).

    Standard deviations use ddof=1 and are 0.0 for a single run. ``per_class`` maps each label (the sorted union
    of gold and predicted labels) to precision/recall/f1 averaged over runs, ``support`` (gold items of the class)
    and ``p_unchanged`` (nan for a class with no gold items).
    """

    n_items: int
    n_runs: int
    accuracy_mean: float
    accuracy_std: float
    macro_f1_mean: float
    macro_f1_std: float
    krippendorff_alpha: float
    p_unchanged: float
    pairwise_churn: float
    per_class: dict[Any, dict[str, float]] = field(default_factory=dict)
    accuracy_per_run: dict[Any, float] = field(default_factory=dict)
    macro_f1_per_run: dict[Any, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe copy: nan -> None, numpy scalars -> Python numbers, label and run keys -> str."""
        return {
            "n_items": int(self.n_items),
            "n_runs": int(self.n_runs),
            "accuracy_mean": _json_float(self.accuracy_mean),
            "accuracy_std": _json_float(self.accuracy_std),
            "macro_f1_mean": _json_float(self.macro_f1_mean),
            "macro_f1_std": _json_float(self.macro_f1_std),
            "krippendorff_alpha": _json_float(self.krippendorff_alpha),
            "p_unchanged": _json_float(self.p_unchanged),
            "pairwise_churn": _json_float(self.pairwise_churn),
            "per_class": {
                str(label): {
                    k: int(v) if k == "support" else _json_float(v) for k, v in scores.items()
                }
                for label, scores in self.per_class.items()
            },
            "accuracy_per_run": {str(r): _json_float(v) for r, v in self.accuracy_per_run.items()},
            "macro_f1_per_run": {str(r): _json_float(v) for r, v in self.macro_f1_per_run.items()},
        }


def _json_float(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1); 0.0 for one run rather than nan, as there is no spread to report."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def evaluate_table(df: pd.DataFrame, *, source: str = "table") -> Evaluation:
    """Validate a prediction table and compute accuracy, macro F1, per-class scores and stability over runs.

    Runs are ordered by sorted run id and items by sorted item id; the work is done on an integer
    (n_runs, n_items) matrix of label codes, with no Python loop over items or runs.
    """
    coded = _code_table(df, source=source)
    runs, labels, preds, gold = coded.runs, coded.labels, coded.preds, coded.gold
    (n_runs, n_items), n_labels = preds.shape, len(labels)

    acc = (preds == gold[None, :]).mean(axis=1)
    precision, recall, f1, run_support, n_pred = _per_run_prfs(gold, preds, n_labels)
    support = run_support[0]  # the same gold items in every run
    macro = _macro_from(f1, run_support, n_pred)
    class_unchanged = per_class_p_unchanged(preds, gold, labels=range(n_labels))

    per_class = {
        label: {
            "precision": float(precision[:, k].mean()),
            "recall": float(recall[:, k].mean()),
            "f1": float(f1[:, k].mean()),
            "support": int(support[k]),
            "p_unchanged": class_unchanged[k],
        }
        for k, label in enumerate(labels)
    }
    logger.debug("evaluated %s: %d runs x %d items, %d labels", source, n_runs, n_items, n_labels)
    return Evaluation(
        n_items=n_items,
        n_runs=n_runs,
        accuracy_mean=float(acc.mean()),
        accuracy_std=_std(acc),
        macro_f1_mean=float(macro.mean()),
        macro_f1_std=_std(macro),
        krippendorff_alpha=krippendorff_alpha(preds),
        p_unchanged=p_unchanged(preds),
        pairwise_churn=pairwise_churn(preds),
        per_class=per_class,
        accuracy_per_run={run: float(a) for run, a in zip(runs, acc)},
        macro_f1_per_run={run: float(m) for run, m in zip(runs, macro)},
    )
