"""``random``: B items drawn at random, the baseline every other policy must beat."""

from __future__ import annotations

import numpy as np

from .base import PolicyInput, Selection, mask, register_policy, top_k


@register_policy("random")
def random_policy(ctx: PolicyInput) -> Selection:
    """B items at random (failed teacher calls first), seeded."""
    score = np.random.default_rng(ctx.seed).random(ctx.n)
    return Selection(chosen=mask(ctx.n, top_k(ctx, score, ctx.budget)))
