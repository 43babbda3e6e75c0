"""How far the teacher's distribution P_S is from the truth, measured on a gold sample.

``kl_estimate`` answers the paper's open question about KL(P || P_S); ``calibration`` says whether the teacher's
confidence means anything (expected calibration error and the reliability diagram's bins); ``confusion_flows``
says which classes it confuses with which.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import SilverlabelError

EPS = 1e-12  # P_S below this counts as EPS, so one confident miss costs -log(EPS) ≈ 27.6 nats instead of infinity


@dataclass(frozen=True)
class KLEstimate:
    """KL(P || P_S) in nats from n gold labels, its bootstrap 95 % interval, and the sample size it needs."""

    value: float
    ci_low: float
    ci_high: float
    se: float  # bootstrap standard error
    n: int

    def gold_needed(self, tolerance: float) -> int:
        """Gold labels for a 95 % interval of half-width ``tolerance`` nats, assuming the standard error shrinks
        as 1/sqrt(n) from the one measured here."""
        if tolerance <= 0:
            raise SilverlabelError(f"tolerance {tolerance} must be positive (nats)")
        return max(1, math.ceil(self.n * (1.96 * self.se / tolerance) ** 2))

    def to_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "se": self.se, "n": self.n}


def _check(probs, gold_index) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    g = np.asarray(gold_index)
    if p.ndim != 2 or g.shape != (len(p),):
        raise SilverlabelError(f"probs must be (n, K) and gold_index (n,); got {p.shape} and {g.shape}")
    if len(p) == 0:
        raise SilverlabelError("no gold labels to measure the teacher against")
    if not np.issubdtype(g.dtype, np.integer) or g.min() < 0 or g.max() >= p.shape[1]:
        raise SilverlabelError(f"gold_index must be class indices in 0..{p.shape[1] - 1}")
    if np.isnan(p).any():
        raise SilverlabelError("probs hold NaN rows (failed teacher calls); leave those items out")
    return p, g


def kl_estimate(probs, gold_index, *, n_boot: int = 1000, seed: int = 0) -> KLEstimate:
    """Estimate KL(P || P_S) as the mean of -log P_S(y_gold | x) over a gold sample.

    This assumes the gold label is a deterministic function of the text (P one-hot, so H(P) = 0). If annotators
    would disagree on some texts, the same number is the cross-entropy H(P, P_S) = KL(P || P_S) + H(P), an upper
    bound on the KL. The interval is the percentile bootstrap over items.
    """
    p, g = _check(probs, gold_index)
    loss = -np.log(np.clip(p[np.arange(len(p)), g], EPS, 1.0))
    rng = np.random.default_rng(seed)
    boot = np.array([loss[rng.integers(0, len(loss), len(loss))].mean() for _ in range(n_boot)])
    low, high = np.percentile(boot, [2.5, 97.5])
    return KLEstimate(value=float(loss.mean()), ci_low=float(low), ci_high=float(high),
                      se=float(boot.std(ddof=1)) if n_boot > 1 else float("nan"), n=len(loss))


@dataclass(frozen=True)
class Calibration:
    """Expected calibration error and the reliability diagram's bins (confidence, accuracy, count)."""

    ece: float
    bins: pd.DataFrame  # lower, upper, confidence, accuracy, count (empty bins: NaN confidence/accuracy)


def calibration(probs, gold_index, *, n_bins: int = 10) -> Calibration:
    """Top-label calibration: items binned by max P_S into equal-width bins (lower, upper]; ECE is the
    count-weighted mean |accuracy - confidence| over the bins."""
    p, g = _check(probs, gold_index)
    if n_bins < 1:
        raise SilverlabelError(f"n_bins must be at least 1 (got {n_bins})")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == g).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.digitize(conf, edges[1:-1], right=True)
    rows, ece = [], 0.0
    for b in range(n_bins):
        sel = which == b
        count = int(sel.sum())
        c = float(conf[sel].mean()) if count else float("nan")
        a = float(correct[sel].mean()) if count else float("nan")
        if count:
            ece += count / len(p) * abs(a - c)
        rows.append((edges[b], edges[b + 1], c, a, count))
    return Calibration(ece=float(ece), bins=pd.DataFrame(rows, columns=["lower", "upper", "confidence",
                                                                        "accuracy", "count"]))


FAILED = "(no label)"


@dataclass(frozen=True)
class ConfusionFlows:
    """Gold -> teacher counts, per-class error, and the off-diagonal flows largest first."""

    matrix: pd.DataFrame  # rows gold, columns teacher (plus FAILED when some teacher calls failed)
    per_class: pd.DataFrame  # label, support, errors, error_rate, most_confused_with
    flows: pd.DataFrame  # gold, teacher, count (gold != teacher), largest first


def confusion_flows(gold: Sequence[str], teacher: Sequence[str | None], labels: Sequence[str]) -> ConfusionFlows:
    """Which classes the teacher confuses: label strings in, failed teacher calls (None) as their own column."""
    gold = list(gold)
    teacher = [FAILED if t is None or (isinstance(t, float) and np.isnan(t)) else t for t in teacher]
    if len(gold) != len(teacher):
        raise SilverlabelError(f"{len(gold)} gold labels but {len(teacher)} teacher labels")
    allowed = set(labels)
    for name, values in (("gold", gold), ("teacher", teacher)):
        bad = [v for v in values if v not in allowed and not (name == "teacher" and v == FAILED)]
        if bad:
            raise SilverlabelError(f"{name} label '{bad[0]}' is not one of {list(labels)}")
    cols = list(labels) + ([FAILED] if FAILED in teacher else [])
    matrix = pd.DataFrame(0, index=pd.Index(list(labels), name="gold"), columns=pd.Index(cols, name="teacher"))
    for g, t in zip(gold, teacher):
        matrix.loc[g, t] += 1
    rows = []
    for lab in labels:
        row = matrix.loc[lab]
        support = int(row.sum())
        errors = support - int(row[lab])
        off = row.drop(lab)
        worst = str(off.idxmax()) if errors else None
        rows.append((lab, support, errors, errors / support if support else float("nan"), worst))
    per_class = pd.DataFrame(rows, columns=["label", "support", "errors", "error_rate", "most_confused_with"])
    flows = [(g, t, int(matrix.loc[g, t])) for g in labels for t in cols if g != t and matrix.loc[g, t] > 0]
    flows_df = pd.DataFrame(flows, columns=["gold", "teacher", "count"]).sort_values(
        ["count", "gold", "teacher"], ascending=[False, True, True], kind="stable").reset_index(drop=True)
    return ConfusionFlows(matrix=matrix, per_class=per_class, flows=flows_df)
