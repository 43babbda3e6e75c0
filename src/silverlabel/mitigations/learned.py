"""``learned``: the paper's open question, a model of where the teacher is wrong fitted on a little gold.

Part of the budget buys a gold validation set (``validation``: a share of B as a float, default 0.3, or a count;
drawn at random, so the model sees the teacher's errors as they occur). A logistic (or ridge) regression on the
text's sentence embedding, the entropy and margin of P_S and the teacher's label (one-hot) learns P(teacher is
wrong); the rest of B goes to the items it rates most likely wrong. The validation items keep their gold too.
When the validation set holds no error (or only errors) there is nothing to learn and the rest goes by entropy.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import SilverlabelError
from .base import PolicyInput, Selection, mask, register_policy, top_k

log = logging.getLogger(__name__)


def validation_size(budget: int, validation: float) -> int:
    """Gold labels of B that go to the validation set."""
    if isinstance(validation, bool) or not isinstance(validation, (int, float, np.integer, np.floating)):
        raise SilverlabelError(f"policy 'learned': validation={validation!r} is not a share (0.5) or a count (50)")
    if isinstance(validation, (float, np.floating)):
        if not 0 <= validation <= 1:
            raise SilverlabelError(f"policy 'learned': validation share {validation} is outside [0, 1]")
        return round(validation * budget)
    if validation < 0:
        raise SilverlabelError(f"policy 'learned': validation count {validation} is negative")
    return min(int(validation), budget)


def plan_validation(ctx: PolicyInput) -> tuple[np.ndarray, np.ndarray]:
    """Indices that get gold before the model exists: failed calls first, then the random validation sample."""
    first = top_k(ctx, np.zeros(ctx.n), int(ctx.failed.sum()))[:ctx.budget]
    pool = np.flatnonzero(~ctx.failed)
    size = min(validation_size(ctx.budget, ctx.options["validation"]), ctx.budget - len(first), len(pool))
    sample = np.random.default_rng(ctx.seed).choice(pool, size=size, replace=False) if size > 0 else pool[:0]
    return first, np.sort(sample)


def error_features(ctx: PolicyInput, embeddings: np.ndarray | None) -> np.ndarray:
    """[embedding, entropy, margin, teacher one-hot]; the scalar features standardised, the unit-length
    embedding left as it is so that regularisation keeps its many small dimensions from drowning them."""
    scalars = np.column_stack([ctx.entropy, ctx.margin])
    scalars = (scalars - scalars.mean(0)) / np.where(scalars.std(0) > 0, scalars.std(0), 1)
    onehot = np.zeros((ctx.n, len(ctx.label_names)))
    onehot[~ctx.failed, ctx.teacher[~ctx.failed]] = 1
    parts = [scalars, onehot] if embeddings is None else [embeddings * ctx.options["embedding_scale"], scalars,
                                                          onehot]
    return np.hstack(parts)


def fit_error_model(x: np.ndarray, wrong: np.ndarray, *, model: str, c: float, seed: int):
    """A scorer of P(teacher wrong): logistic regression (class-balanced) or ridge on the 0/1 target."""
    if model == "logistic":
        from sklearn.linear_model import LogisticRegression

        fitted = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed).fit(x, wrong)
        return lambda z: fitted.predict_proba(z)[:, 1]
    if model == "ridge":
        from sklearn.linear_model import Ridge

        fitted = Ridge(alpha=1.0 / c).fit(x, wrong.astype(np.float64))
        return fitted.predict
    raise SilverlabelError(f"policy 'learned': model='{model}' is not 'logistic' or 'ridge'")


@register_policy("learned", needs_gold=True, defaults={"validation": 0.3, "model": "logistic", "C": 1.0,
                                                       "embeddings": None, "use_embeddings": True,
                                                       "embedding_scale": 1.0})
def learned_policy(ctx: PolicyInput) -> Selection:
    """A gold validation set trains a model of where the teacher errs; the rest of B goes to its top items."""
    if ctx.budget == 0:
        return Selection(chosen=np.zeros(ctx.n, dtype=bool), info={"validation_items": 0})
    oracle = ctx.require_oracle("learned")
    first, val = plan_validation(ctx)
    oracle.reveal(first)
    gold = oracle.reveal(val)
    index = {n: i for i, n in enumerate(ctx.label_names)}
    wrong = np.array([index.get(g, -2) != t for g, t in zip(gold, ctx.teacher[val])], dtype=bool)
    revealed = mask(ctx.n, np.concatenate([first, val]))
    rest = ctx.budget - int(revealed.sum())
    info = {"validation_items": len(val), "validation_errors": int(wrong.sum())}
    if rest > 0 and 0 < wrong.sum() < len(wrong):
        from .embeddings import features_for

        emb = features_for(ctx, embeddings=ctx.options["embeddings"]) if ctx.options["use_embeddings"] else None
        x = error_features(ctx, emb)
        scorer = fit_error_model(x[val], wrong, model=ctx.options["model"], c=ctx.options["C"], seed=ctx.seed)
        score = scorer(x)
        info["error_model"] = ctx.options["model"]
    else:
        if rest > 0:
            log.warning("policy 'learned': the %d validation items hold %d teacher errors, too few to learn from; "
                        "the rest of the budget goes by entropy", len(val), int(wrong.sum()))
        score = ctx.entropy
        info["error_model"] = "entropy (fallback)"
    chosen = revealed | mask(ctx.n, top_k(ctx, score, rest, exclude=revealed))
    return Selection(chosen=chosen, info=info)
