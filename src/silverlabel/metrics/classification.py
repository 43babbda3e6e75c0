"""Accuracy, macro F1 and per-class scores of one run's predictions against gold labels.

Everything uses scikit-learn with ``zero_division=0``, so no ``UndefinedMetricWarning`` is ever emitted: a class
that is never predicted has precision 0, a class with no gold items has recall 0.

Macro F1 rule (differs from scikit-learn when ``labels`` is given): the average runs over the labels in ``labels``
that occur in ``y_true`` or ``y_pred``. A class with gold items but no predictions counts as F1 0, a class that is
predicted but has no gold items counts as F1 0, and a class with neither is left out instead of counting as 0.
scikit-learn would count it as 0, which would make one run's macro F1 depend on which labels *other* runs happened to
predict (the study's label set is the union over all runs). With ``labels=None`` the result equals scikit-learn's.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from silverlabel.errors import SilverlabelError

__all__ = ["accuracy", "macro_f1", "per_class"]


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both label vectors as 1-D arrays of one length, or a SilverlabelError saying what is wrong."""
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if yt.ndim != 1 or yp.ndim != 1:
        raise SilverlabelError(
            f"y_true/y_pred: expected 1-D label vectors, got shapes {yt.shape} and {yp.shape}; pass one label per item"
        )
    if len(yt) != len(yp):
        raise SilverlabelError(
            f"y_true/y_pred: lengths differ ({len(yt)} vs {len(yp)}); pass one prediction per gold item"
        )
    if len(yt) == 0:
        raise SilverlabelError("y_true/y_pred: no items; pass at least one (gold, prediction) pair")
    return yt, yp


def _sklearn():
    """scikit-learn's metrics and label helpers, imported on first use: the import takes ~1-2 s on 2 cores (scipy
    comes with it), which every `silverlabel` command, --help included, would otherwise pay at start-up."""
    from sklearn import metrics
    from sklearn.utils import multiclass

    return metrics, multiclass


def _sklearn_call(fn, *args, **kwargs):
    """Call scikit-learn, turning its input errors (e.g. mixed int/str labels) into SilverlabelError."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SilverlabelError(
            f"y_true/y_pred: scikit-learn rejected the labels ({first_line}); use one label type (all str or all int)"
        ) from err


def _macro_from(f1: np.ndarray, support: np.ndarray, n_pred: np.ndarray) -> np.ndarray:
    """Macro F1 over the last axis, leaving out classes with neither gold items nor predictions (nan if none left)."""
    present = (support > 0) | (n_pred > 0)
    n_present = present.sum(axis=-1)
    total = np.where(present, f1, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_present > 0, total / np.maximum(n_present, 1), np.nan)


def _prfs(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[Hashable]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1, support and number of predictions, in the order of ``labels``."""
    index = pd.Index(list(labels))
    if not index.is_unique:
        raise SilverlabelError("labels: contains duplicates; pass each label once")
    p, r, f, s = _sklearn_call(
        _sklearn()[0].precision_recall_fscore_support,
        y_true,
        y_pred,
        labels=list(labels),
        average=None,
        zero_division=0,
    )
    pred_idx = index.get_indexer(pd.Index(y_pred))
    n_pred = np.bincount(pred_idx[pred_idx >= 0], minlength=len(index))
    return p, r, f, s, n_pred


def _per_run_prfs(
    gold: np.ndarray, preds: np.ndarray, n_labels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-run, per-class precision/recall/F1/support/predicted counts, each of shape (n_runs, n_labels).

    ``gold`` holds label codes 0..n_labels-1 per item, ``preds`` the codes per (run, item). Written by hand with
    ``bincount`` rather than calling scikit-learn once per run: its input checks cost about 3 ms a call, more than
    this whole computation; the formulas and ``zero_division=0`` match ``precision_recall_fscore_support`` (tests
    compare the two run by run). Runs are folded into the label code (``run * n_labels + code``) so one
    ``bincount`` counts every (run, class) pair.
    """
    n_runs, _ = preds.shape
    shape = (n_runs, n_labels)
    folded = preds + (np.arange(n_runs) * n_labels)[:, None]
    hit = preds == gold[None, :]
    tp = np.bincount(folded[hit], minlength=n_runs * n_labels).reshape(shape).astype(float)
    n_pred = np.bincount(folded.ravel(), minlength=n_runs * n_labels).reshape(shape)
    support = np.broadcast_to(np.bincount(gold, minlength=n_labels), shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_pred > 0, tp / np.maximum(n_pred, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        denominator = n_pred + support  # 2tp + fp + fn
        f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return precision, recall, f1, support, n_pred


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of items whose prediction equals the gold label."""
    yt, yp = _pair(y_true, y_pred)
    return float(_sklearn_call(_sklearn()[0].accuracy_score, yt, yp))


def macro_f1(y_true: Any, y_pred: Any, *, labels: Sequence[Hashable] | None = None) -> float:
    """Unweighted mean of per-class F1 (see the module docstring for which classes are averaged).

    ``labels`` is the full label set of the study; labels outside it are ignored. Returns nan when none of
    ``labels`` occurs in ``y_true`` or ``y_pred``.
    """
    yt, yp = _pair(y_true, y_pred)
    if labels is None:
        labels = _sklearn_call(_sklearn()[1].unique_labels, yt, yp)
    if len(labels) == 0:
        raise SilverlabelError("labels: empty label set; pass the study's labels or leave labels=None")
    _, _, f, s, n_pred = _prfs(yt, yp, labels)
    return float(_macro_from(f, s, n_pred))


def per_class(y_true: Any, y_pred: Any, *, labels: Sequence[Hashable]) -> dict[Hashable, dict[str, float]]:
    """Precision, recall, F1 and support for every label in ``labels``, in that order (zero_division=0)."""
    yt, yp = _pair(y_true, y_pred)
    if len(labels) == 0:
        raise SilverlabelError("labels: empty label set; pass the study's labels")
    p, r, f, s, _ = _prfs(yt, yp, labels)
    return {
        _native(label): {
            "precision": float(p[k]),
            "recall": float(r[k]),
            "f1": float(f[k]),
            "support": int(s[k]),
        }
        for k, label in enumerate(labels)
    }


def _native(value: Any) -> Any:
    """A numpy scalar as the matching Python value, so dict keys compare and serialise like plain labels."""
    return value.item() if isinstance(value, np.generic) else value
