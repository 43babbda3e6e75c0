"""Sampling designs for the gold sample: which items a person labels, each with a known inclusion probability.

A design is Poisson (Bernoulli) sampling: item i is labelled independently with probability pi_i, and the
estimates in :mod:`silverlabel.inference` weight each gold item by 1/pi_i (ppi_py's ``w``). Two designs:

- ``uniform``: pi_i = budget / N for every item;
- ``active``: pi_i proportional to the teacher's uncertainty (the entropy of P_S) mixed with a uniform floor,
  pi_i = budget * ((1 - floor) * H_i / sum(H) + floor / N), capped at 1 (active inference, Zrnic & Candes 2024,
  arXiv 2403.03208). Uncertain items are labelled more often, where the teacher's errors are; the floor keeps every
  pi_i away from 0, so no weight explodes.

Poisson sampling rather than a fixed-size draw because it is the design the active-inference estimator is proved
for, and the only one where each item's pi_i is exactly known and independent of the others; the price is that the
number of gold labels varies around the budget (standard deviation below sqrt(budget)).

Items used as prompt demonstrations (``demo`` column) get pi_i = 0 and are never drawn: their teacher label was
produced with their own gold label in the prompt, so their teacher errors are not a sample of the teacher's errors
on the other items, and the estimates exclude them from the population (see :func:`silverlabel.inference.estimate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SilverlabelError

DESIGNS = ("uniform", "active")
INCLUSION_COLUMN = "inclusion_prob"


@dataclass
class Design:
    """A probability sample: each item's inclusion probability and whether it was drawn."""

    name: str
    inclusion: np.ndarray  # pi_i in [0, 1]; 0 for items that may never be drawn (demonstrations)
    chosen: np.ndarray  # bool


def inclusion_probabilities(entropy: np.ndarray, budget: float, *, design: str = "uniform", floor: float = 0.1,
                            eligible: np.ndarray | None = None) -> np.ndarray:
    """pi_i of every item for an expected ``budget`` gold labels; ineligible items (demonstrations) get 0."""
    if design not in DESIGNS:
        raise SilverlabelError(f"design '{design}' is unknown; choose one of {', '.join(DESIGNS)}")
    if not 0 < floor <= 1:
        raise SilverlabelError(f"the uniform floor of the active design must be in (0, 1], got {floor}")
    entropy = np.asarray(entropy, dtype=np.float64)
    eligible = np.ones(len(entropy), dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    n_eligible = int(eligible.sum())
    if n_eligible == 0:
        raise SilverlabelError("no item can be drawn for gold (all are demonstrations)")
    if not 0 < budget <= n_eligible:
        raise SilverlabelError(f"a gold budget of {budget} does not fit {n_eligible} eligible items")
    score = np.ones(len(entropy)) if design == "uniform" else np.nan_to_num(entropy, nan=float(np.nanmax(entropy)))
    score = np.where(eligible, np.maximum(score, 0.0), 0.0)
    share = score / score.sum() if score.sum() > 0 else eligible / n_eligible
    q = (1 - floor) * share + floor * eligible / n_eligible if design == "active" else share
    return _capped(q, budget)


def _capped(q: np.ndarray, budget: float) -> np.ndarray:
    """budget * q with every pi capped at 1 and the excess spread over the rest, so the expected size stays the
    budget (hand-written: a few lines of water-filling, no library does this for a plain array)."""
    pi = np.zeros_like(q)
    free = q > 0
    left = float(budget)
    for _ in range(len(q)):
        pi[free] = left * q[free] / q[free].sum()
        over = free & (pi >= 1)
        if not over.any():
            break
        pi[over] = 1.0
        free &= ~over
        left = budget - float((pi == 1).sum())
        if left <= 0 or not free.any():
            break
    return np.clip(pi, 0.0, 1.0)


def draw(inclusion: np.ndarray, *, seed: int, name: str = "uniform") -> Design:
    """Poisson sampling: item i is drawn with probability pi_i, independently of the others."""
    rng = np.random.default_rng(seed)
    inclusion = np.asarray(inclusion, dtype=np.float64)
    return Design(name=name, inclusion=inclusion, chosen=rng.random(len(inclusion)) < inclusion)


def check_inclusion(values, *, where: str, items=None) -> np.ndarray:
    """Inclusion probabilities read from a file must lie in (0, 1]: a 0 would mean the item could not have been
    drawn, and anything above 1 is no probability."""
    arr = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~((arr > 0) & (arr <= 1)))
    if len(bad):
        i = int(bad[0])
        who = f"item '{items[i]}'" if items is not None else f"row {i + 1}"
        raise SilverlabelError(f"{where}: {who} has {INCLUSION_COLUMN} {float(arr[i])}, which is not in (0, 1]; a "
                               "design's inclusion probabilities must be in (0, 1]")
    return arr
