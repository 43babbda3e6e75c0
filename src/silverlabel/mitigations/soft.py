"""``soft``: train on the teacher's whole distribution P_S instead of its argmax (a baseline without gold).

At B > 0 the budget still goes somewhere, so the comparison stays at equal gold: the B items chosen by ``select``
(``entropy`` or ``random``) get a one-hot gold row in place of P_S. At B = 0 this is plain soft-label training.
"""

from __future__ import annotations

import numpy as np

from ..errors import SilverlabelError
from .base import PolicyInput, Selection, mask, register_policy, top_k


@register_policy("soft", defaults={"select": "entropy"})
def soft_policy(ctx: PolicyInput) -> Selection:
    """P_S as the training target; the B gold labels go to the highest-entropy (or random) items."""
    how = ctx.options["select"]
    if how == "entropy":
        score = ctx.entropy
    elif how == "random":
        score = np.random.default_rng(ctx.seed).random(ctx.n)
    else:
        raise SilverlabelError(f"policy 'soft': option select='{how}' is not 'entropy' or 'random'")
    soft = ctx.probs.copy()
    soft[ctx.failed] = np.nan  # no distribution to learn from; the item is dropped unless it gets gold
    return Selection(chosen=mask(ctx.n, top_k(ctx, score, ctx.budget)), soft=soft)
