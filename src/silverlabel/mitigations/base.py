"""The mitigation contract: a policy picks which training items get a gold label, within a budget B.

A policy sees the teacher's records and may ask a :class:`GoldOracle` for gold labels, which counts every reveal
and refuses to go past B. The caller (:func:`silverlabel.mitigations.apply_policy`) then replaces (or drops) the
chosen items and does the accounting with the full gold, which no policy sees.

Items whose teacher call failed (label None) are the first candidates for gold in every policy: their label is
certainly missing, so a gold label there is never wasted. Failed items left without gold are dropped.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import entropy

from ..errors import SilverlabelError

log = logging.getLogger(__name__)

_BUDGET_HELP = ("pass a share in [0, 1] as a number (0.05), a percentage string ('5%') or a count of items as an "
                "integer (50)")


def resolve_budget(budget: float | str, n: int) -> int:
    """Gold labels to spend on ``n`` items. A float is a share (1.0 = every item), an int a count; a count above
    ``n`` is capped at ``n`` (the result says so in its accounting), a share above 100 % is an error."""
    value: float | int
    if isinstance(budget, bool) or budget is None:
        raise SilverlabelError(f"budget {budget!r} is not a budget; {_BUDGET_HELP}")
    if isinstance(budget, str):
        text = budget.strip()
        try:
            if text.endswith("%"):
                value = float(text[:-1]) / 100
            elif re.fullmatch(r"[+-]?\d+", text):
                value = int(text)
            else:
                value = float(text)
        except ValueError:
            raise SilverlabelError(f"budget '{budget}' is not a number; {_BUDGET_HELP}") from None
    elif isinstance(budget, (int, np.integer)):
        value = int(budget)
    elif isinstance(budget, (float, np.floating)):
        value = float(budget)
    else:
        raise SilverlabelError(f"budget {budget!r} is not a number; {_BUDGET_HELP}")
    if isinstance(value, float):
        if math.isnan(value) or value < 0:
            raise SilverlabelError(f"budget {budget!r} is negative or not a number; {_BUDGET_HELP}")
        if value > 1:
            raise SilverlabelError(f"budget {budget!r} is above 100 % of the items; {_BUDGET_HELP}")
        return math.floor(value * n + 0.5)
    if value < 0:
        raise SilverlabelError(f"budget {budget!r} is negative; {_BUDGET_HELP}")
    if value > n:
        log.warning("budget %d is more than the %d items; spending %d", value, n, n)
    return min(value, n)


class GoldOracle:
    """Gold labels behind a counter: a policy learns a gold label only by asking for its index.

    ``gold`` holds label strings, with None where no gold exists (human labels not collected yet); asking for
    one of those is an error naming the item. Revealing an index twice costs once.
    """

    def __init__(self, gold: Sequence[str | None], *, budget: int | None = None,
                 items: Sequence[str] | None = None, source: str = "gold labels") -> None:
        self._gold = np.asarray(list(gold), dtype=object)
        self.budget = budget
        self.items = None if items is None else [str(i) for i in items]
        self.source = source
        self._revealed = np.zeros(len(self._gold), dtype=bool)

    def __len__(self) -> int:
        return len(self._gold)

    @property
    def used(self) -> int:
        """Gold labels revealed so far."""
        return int(self._revealed.sum())

    @property
    def revealed(self) -> np.ndarray:
        """Boolean mask of the indices revealed so far (a copy)."""
        return self._revealed.copy()

    @property
    def left(self) -> int | None:
        return None if self.budget is None else self.budget - self.used

    def session(self, *, budget: int | None) -> GoldOracle:
        """A fresh counter over the same gold, so several policies can be run from one oracle."""
        return GoldOracle(self._gold, budget=budget, items=self.items, source=self.source)

    def reveal(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Gold labels of ``indices`` (object array), counted against the budget."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self._gold)):
            raise IndexError(f"gold index out of range 0..{len(self._gold) - 1}")
        new = np.unique(idx[~self._revealed[idx]])
        if self.budget is not None and self.used + len(new) > self.budget:
            raise SilverlabelError(f"a policy asked for {self.used + len(new)} gold labels but the budget is "
                                   f"{self.budget}; this is a bug in the policy")
        missing = [int(i) for i in new if self._gold[i] is None or self._gold[i] != self._gold[i]]
        if missing:
            name = self.items[missing[0]] if self.items else str(missing[0])
            raise SilverlabelError(f"item '{name}' has no label in {self.source} ({len(missing)} asked for are "
                                   "missing); label it and run again")
        self._revealed[new] = True
        return self._gold[idx].copy()

    def audit(self) -> np.ndarray:
        """All gold labels, for accounting after a policy has run; policies must never call this."""
        return self._gold.copy()


@dataclass
class PolicyInput:
    """What a policy sees: the teacher's records, decoded once, and the budget in items."""

    records: pd.DataFrame
    label_names: list[str]
    budget: int
    oracle: GoldOracle | None
    seed: int
    ensemble: list[pd.DataFrame]
    options: dict[str, Any]
    probs: np.ndarray  # (n, K) P_S; rows of failed items are uniform (so models can take them), see `failed`
    teacher: np.ndarray  # teacher label index, -1 where the call failed
    failed: np.ndarray  # bool

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def entropy(self) -> np.ndarray:
        return entropy(self.probs, axis=1)

    @property
    def margin(self) -> np.ndarray:
        top = np.sort(self.probs, axis=1)
        return top[:, -1] - top[:, -2] if top.shape[1] > 1 else np.ones(len(top))

    def require_oracle(self, policy: str) -> GoldOracle:
        if self.oracle is None:
            raise SilverlabelError(f"policy '{policy}' needs gold labels while it chooses (a validation set); "
                                   "pass an oracle (or --labels with the validation items labelled)")
        return self.oracle


@dataclass
class Selection:
    """A policy's answer: the items to give gold, and optionally labels or a distribution to use elsewhere."""

    chosen: np.ndarray  # bool mask; includes any items the policy already revealed (a validation set)
    labels: np.ndarray | None = None  # object array replacing the teacher's labels before gold (ensemble vote)
    soft: np.ndarray | None = None  # (n, K) training distribution (soft policy)
    extra_teacher_calls: int = 0
    extra_teacher_tokens: int = 0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class MitigationResult:
    """Training labels after a policy spent its gold budget, and what that cost and caught."""

    labels: np.ndarray  # object array of label strings; None for dropped items (and failed ones left without gold)
    soft: np.ndarray | None  # (n, K) distributions (the soft policy); NaN rows where labels is None
    chosen: np.ndarray  # bool mask of the items that got gold
    accounting: dict[str, Any]
    policy: str = ""
    action: str = "replace"

    @property
    def kept(self) -> np.ndarray:
        """Items with a training label."""
        return np.array([v is not None for v in self.labels], dtype=bool)


@dataclass(frozen=True)
class PolicySpec:
    name: str
    fn: Callable[[PolicyInput], Selection]
    defaults: dict[str, Any]
    needs_gold: bool
    summary: str


POLICIES: dict[str, PolicySpec] = {}


def register_policy(name: str, *, defaults: dict[str, Any] | None = None, needs_gold: bool = False):
    """Decorator: make a policy function available under ``name``. ``defaults`` lists every option it accepts
    (any other key is an error); ``needs_gold`` marks policies that ask the oracle while choosing."""

    def wrap(fn: Callable[[PolicyInput], Selection]) -> Callable[[PolicyInput], Selection]:
        if name in POLICIES:
            raise ValueError(f"policy '{name}' is registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        POLICIES[name] = PolicySpec(name, fn, dict(defaults or {}), needs_gold, summary)
        return fn

    return wrap


def top_k(ctx: PolicyInput, score: np.ndarray, k: int, *, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` highest scores, failed items first, ties by position (so results are reproducible)."""
    score = np.where(np.isnan(score), -np.inf, np.asarray(score, dtype=np.float64))
    order = np.lexsort((np.arange(ctx.n), -score, ~ctx.failed))
    if exclude is not None:
        order = order[~exclude[order]]
    return order[:max(k, 0)]


def mask(n: int, indices: np.ndarray) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[np.asarray(indices, dtype=np.int64)] = True
    return out
