"""``ensemble``: several teacher runs with different demonstration sets; where their labels flip, ask for gold.

The first run is the records themselves; ``ensemble`` holds the other runs' annotation frames (same items, other
demo seeds), whose calls and tokens are counted as extra annotation cost. Items are ranked by flip rate (the share
of runs that disagree with the majority), ties by the entropy of the runs' mean distribution; if fewer than B
items flip, the rest of the budget goes by that entropy (``fill='entropy'``) or at random, so every policy spends
the same B; ``fill='none'`` spends gold on flipped (and failed) items only, which with B = 100 % is the paper's
ensemble: every item whose label flips gets its gold label, and the gold spent is the number of flips. ``vote=True`` trains on the runs' majority vote instead of the first run's labels: with B = 0 that is
the ensemble as a label source with no gold at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import entropy

from ..errors import SilverlabelError
from .base import PolicyInput, Selection, mask, register_policy


def align_runs(records: pd.DataFrame, others: Sequence[pd.DataFrame], label_names: Sequence[str]):
    """Label indices (runs, n; -1 where a call failed) and P_S (runs, n, K) of every run, in the records' order."""
    from . import teacher_arrays

    items = records["item"].astype(str).tolist()
    labels, probs = [], []
    for r, frame in enumerate([records, *others]):
        where = "records" if r == 0 else f"ensemble run {r}"
        if "item" not in frame.columns:
            raise SilverlabelError(f"{where}: no column 'item'; pass `silverlabel annotate` outputs")
        keyed = frame.assign(item=frame["item"].astype(str)).drop_duplicates("item").set_index("item")
        absent = [i for i in items if i not in keyed.index]
        if absent:
            raise SilverlabelError(f"{where}: item '{absent[0]}' of the first run is missing ({len(absent)} in all); "
                                   "annotate the same training items in every run")
        p, t, _ = teacher_arrays(keyed.loc[items].reset_index(), label_names, where=where)
        labels.append(t)
        probs.append(p)
    return np.stack(labels), np.stack(probs)


def flip_rate(labels: np.ndarray) -> np.ndarray:
    """Share of an item's valid runs that disagree with its majority label (0 when all agree or none is valid)."""
    k = max(int(labels.max()) + 1, 1)
    counts = np.stack([(labels == c).sum(axis=0) for c in range(k)], axis=1)
    valid = counts.sum(axis=1)
    return np.where(valid > 0, 1 - counts.max(axis=1) / np.maximum(valid, 1), 0.0)


def majority_vote(labels: np.ndarray, probs: np.ndarray, label_names: Sequence[str]) -> np.ndarray:
    """The runs' majority label per item (ties by the summed distribution); None where every run failed."""
    k = len(label_names)
    counts = np.stack([(labels == c).sum(axis=0) for c in range(k)], axis=1).astype(np.float64)
    valid = labels >= 0
    mass = (probs * valid[..., None]).sum(axis=0)  # tie-breaker, below one vote
    score = counts + mass / (mass.sum(axis=1, keepdims=True) + 1.0)
    best = score.argmax(axis=1)
    return np.array([label_names[b] if valid[:, i].any() else None for i, b in enumerate(best)], dtype=object)


@register_policy("ensemble", defaults={"fill": "entropy", "vote": False})
def ensemble_policy(ctx: PolicyInput) -> Selection:
    """Items whose label flips across teacher runs with different demonstrations, highest flip rate first."""
    if not ctx.ensemble:
        raise SilverlabelError("policy 'ensemble' needs the other teacher runs: ensemble=[annotation frames of the "
                               "same items with other demonstration seeds] (or --ensemble FILE, repeated)")
    labels, probs = align_runs(ctx.records, ctx.ensemble, ctx.label_names)
    flips = flip_rate(labels)
    mean = probs.mean(axis=0)
    ent = entropy(mean, axis=1)
    if ctx.options["fill"] == "entropy":
        second = ent
    elif ctx.options["fill"] == "random":
        second = np.random.default_rng(ctx.seed).random(ctx.n)
    elif ctx.options["fill"] == "none":
        second = ent
    else:
        raise SilverlabelError(f"policy 'ensemble': option fill='{ctx.options['fill']}' is not 'entropy', 'random' "
                               "or 'none'")
    order = np.lexsort((np.arange(ctx.n), -second, -flips, ~ctx.failed))
    if ctx.options["fill"] == "none":
        order = order[(flips[order] > 0) | ctx.failed[order]]
    extra_tokens = sum(int(pd.to_numeric(f.get("prompt_tokens", pd.Series(dtype=float))).fillna(0).sum())
                       for f in ctx.ensemble)
    chosen = mask(ctx.n, order[:ctx.budget])
    return Selection(chosen=chosen,
                     labels=majority_vote(labels, probs, ctx.label_names) if ctx.options["vote"] else None,
                     extra_teacher_calls=sum(len(f) for f in ctx.ensemble), extra_teacher_tokens=extra_tokens,
                     info={"ensemble_runs": len(labels), "flipped_items": int((flips > 0).sum()),
                           "flipped_with_gold": int((flips > 0)[chosen].sum()),
                           # fill='none' spends at most B: the flips decide how much gold is used
                           "budget_is_cap": ctx.options["fill"] == "none"})
