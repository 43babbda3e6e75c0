"""``confident``: confident learning (cleanlab's ``find_label_issues``) over the teacher's labels.

By default the out-of-sample probabilities are the teacher's own P_S. Since the teacher's label is (nearly) the
argmax of P_S, cleanlab then flags little and the ranking is by self-confidence P_S(label): an uncertainty
ranking close to ``entropy``. ``probs='cv'`` uses what confident learning was made for: cross-validated
probabilities of a cheap model (logistic regression on sentence embeddings) fitted to the teacher's labels, so an
item is flagged when its text looks like another class. Flagged items come first (most suspicious first), then
the rest by self-confidence, capped at B.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import SilverlabelError
from .base import PolicyInput, Selection, mask, register_policy, top_k

log = logging.getLogger(__name__)


def cross_validated_probs(features: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0,
                          c: float = 1.0) -> np.ndarray:
    """Out-of-sample class probabilities of logistic regression on ``features`` (classes 0..max(labels))."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = np.bincount(labels)
    folds = int(min(folds, counts[counts > 0].min()))
    if folds < 2:
        raise SilverlabelError("cross-validated probabilities need at least 2 items of every teacher label")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    model = LogisticRegression(C=c, max_iter=2000)
    return cross_val_predict(model, features, labels, cv=cv, method="predict_proba")


def label_issues(labels: np.ndarray, pred_probs: np.ndarray, *, filter_by: str = "prune_by_noise_rate"):
    """Flag mask and self-confidence of each item; classes no item carries are left out for cleanlab."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    present = np.unique(labels)
    remap = np.full(pred_probs.shape[1], -1)
    remap[present] = np.arange(len(present))
    y = remap[labels]
    p = pred_probs[:, present]
    p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
    quality = get_label_quality_scores(y, p, method="self_confidence")
    if len(present) < 2:
        return np.zeros(len(y), dtype=bool), quality
    flagged = find_label_issues(y, p, filter_by=filter_by)
    return np.asarray(flagged, dtype=bool), quality


@register_policy("confident", defaults={"probs": "ps", "folds": 5, "embeddings": None, "C": 1.0,
                                        "filter_by": "prune_by_noise_rate"})
def confident_policy(ctx: PolicyInput) -> Selection:
    """Items cleanlab flags as label issues of the teacher, most suspicious first, capped at B."""
    valid = np.flatnonzero(~ctx.failed)
    labels = ctx.teacher[valid]
    how = ctx.options["probs"]
    score = np.full(ctx.n, -np.inf)
    if len(np.unique(labels)) < 2:  # no second class to confuse it with: confident learning has nothing to say
        log.warning("policy 'confident': the teacher gave every item the same label; ranking by its own "
                    "confidence P_S(label) instead (lowest first)")
        score[valid] = 1 - ctx.probs[valid, labels]
        return Selection(chosen=mask(ctx.n, top_k(ctx, score, ctx.budget)),
                         info={"flagged_items": 0, "flagged_with_gold": 0, "single_teacher_label": True})
    if how == "ps":
        pred = ctx.probs[valid]
    elif how == "cv":
        from .embeddings import features_for

        feats = features_for(ctx, embeddings=ctx.options["embeddings"])[valid]
        present, y = np.unique(labels, return_inverse=True)
        pred = np.zeros((len(valid), len(ctx.label_names)))
        pred[:, present] = cross_validated_probs(feats, y, folds=ctx.options["folds"], seed=ctx.seed,
                                                 c=ctx.options["C"])
    else:
        raise SilverlabelError(f"policy 'confident': option probs='{how}' is not 'ps' (the teacher's P_S) or 'cv'")
    flagged = np.zeros(ctx.n, dtype=bool)
    if len(valid):
        flags, quality = label_issues(labels, pred, filter_by=ctx.options["filter_by"])
        flagged[valid] = flags
        score[valid] = (1 - quality) + 2 * flags  # flagged items rank above every unflagged one
    chosen = mask(ctx.n, top_k(ctx, score, ctx.budget))
    return Selection(chosen=chosen, info={"flagged_items": int(flagged.sum()),
                                          "flagged_with_gold": int((flagged & chosen).sum())})
