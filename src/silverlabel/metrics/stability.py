"""How much a student's predictions change across seeds ("runs").

Every function takes ``preds`` of shape (n_runs, n_items): row r holds run r's prediction for each item. Labels may
be any hashable values (ints, strings); they are mapped to integer codes first. The matrix must be complete (no
missing predictions). No function emits a RuntimeWarning; the degenerate cases have defined values:

=====================  ==========  ====================================  ==========
function               one run     all runs identical / one class only    no items
=====================  ==========  ====================================  ==========
krippendorff_alpha     nan         1.0                                    nan
p_unchanged            1.0         1.0                                    nan
pairwise_churn         0.0         0.0                                    nan
=====================  ==========  ====================================  ==========
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from typing import Any

import krippendorff
import numpy as np
import pandas as pd

from silverlabel.errors import SilverlabelError

__all__ = ["krippendorff_alpha", "p_unchanged", "pairwise_churn", "per_class_p_unchanged"]

logger = logging.getLogger(__name__)


def _encode(preds: Any) -> tuple[np.ndarray, int]:
    """Integer codes of shape (n_runs, n_items) and the number of distinct labels."""
    try:
        arr = np.asarray(preds)
    except ValueError as err:  # ragged nested lists
        raise SilverlabelError(
            "preds: rows have different lengths; every run must predict every item (shape n_runs x n_items)"
        ) from err
    if arr.ndim != 2:
        raise SilverlabelError(
            f"preds: expected a 2-D array of shape (n_runs, n_items), got shape {arr.shape}; "
            "stack one row of predictions per run"
        )
    if arr.shape[0] == 0:
        raise SilverlabelError("preds: no runs (shape has 0 rows); pass at least one run of predictions")
    if np.issubdtype(arr.dtype, np.integer):
        # Already integer labels: factorizing would only renumber them, np.unique does it without object boxing.
        _, codes = np.unique(arr, return_inverse=True)
        return codes.reshape(arr.shape), int(codes.max(initial=-1)) + 1
    codes, uniques = pd.factorize(arr.ravel(order="C"), use_na_sentinel=True)
    if (codes < 0).any():
        run, item = np.unravel_index(int(np.argmax(codes < 0)), arr.shape)
        raise SilverlabelError(
            f"preds: missing prediction at run index {run}, item index {item}; every run must predict every item"
        )
    return codes.reshape(arr.shape), len(uniques)


def _value_counts(codes: np.ndarray, n_values: int) -> np.ndarray:
    """How many runs gave each label to each item, shape (n_items, n_values), without a loop over items."""
    n_items = codes.shape[1]
    flat = (np.arange(n_items)[None, :] * n_values + codes).ravel()
    return np.bincount(flat, minlength=n_items * n_values).reshape(n_items, n_values)


def krippendorff_alpha(preds: Any) -> float:
    """Nominal Krippendorff's alpha with runs as coders and items as units (the ``krippendorff`` package).

    Degenerate cases, where the package would raise or divide by zero: one run (nothing to compare) or no items
    -> nan; every prediction the same label (expected disagreement 0, observed 0: perfect agreement) -> 1.0.
    Expected disagreement 0 with observed disagreement > 0 cannot happen for complete nominal data; if the package
    ever returns a non-finite value anyway the result is nan and a warning is logged.
    """
    codes, n_values = _encode(preds)
    n_runs, n_items = codes.shape
    if n_runs < 2 or n_items == 0:
        return float("nan")
    if n_values < 2:
        return 1.0
    counts = _value_counts(codes, n_values)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(krippendorff.alpha(value_counts=counts, level_of_measurement="nominal"))
    if not np.isfinite(value):
        logger.warning("Krippendorff's alpha is undefined for these predictions (got %r); reporting nan", value)
        return float("nan")
    return value


def p_unchanged(preds: Any) -> float:
    """Share of items that every run predicts identically (one run -> 1.0, no items -> nan)."""
    codes, _ = _encode(preds)
    if codes.shape[1] == 0:
        return float("nan")
    return float((codes == codes[0]).all(axis=0).mean())


def pairwise_churn(preds: Any) -> float:
    """Mean over all pairs of runs of the share of items on which the two runs disagree (one run -> 0.0).

    Computed from per-item label counts rather than a loop over pairs: an item with counts c_v has
    sum_v c_v (c_v - 1) / 2 agreeing pairs out of n_runs (n_runs - 1) / 2.
    """
    codes, n_values = _encode(preds)
    n_runs, n_items = codes.shape
    if n_items == 0:
        return float("nan")
    if n_runs < 2:
        return 0.0
    counts = _value_counts(codes, n_values)
    agreeing = (counts * (counts - 1)).sum(axis=1) / (n_runs * (n_runs - 1))
    return float(1.0 - agreeing.mean())


def per_class_p_unchanged(
    preds: Any, y_true: Any, *, labels: Sequence[Hashable]
) -> dict[Hashable, float]:
    """p_unchanged restricted to the items of each gold class in ``labels`` (a class with no items -> nan)."""
    codes, _ = _encode(preds)
    gold = np.asarray(y_true)
    if gold.ndim != 1 or len(gold) != codes.shape[1]:
        raise SilverlabelError(
            f"y_true: expected one gold label per item ({codes.shape[1]}), got shape {gold.shape}; "
            "pass the gold labels in the same item order as preds' columns"
        )
    unchanged = (codes == codes[0]).all(axis=0)
    keys = [label.item() if isinstance(label, np.generic) else label for label in labels]
    index = pd.Index(keys)
    if not index.is_unique:
        raise SilverlabelError("labels: contains duplicates; pass each label once")
    cls = index.get_indexer(pd.Index(gold))
    known = cls >= 0
    n = np.bincount(cls[known], minlength=len(index))
    n_unchanged = np.bincount(cls[known], weights=unchanged[known], minlength=len(index))
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(n > 0, n_unchanged / np.maximum(n, 1), np.nan)
    return {key: float(share[k]) for k, key in enumerate(keys)}
