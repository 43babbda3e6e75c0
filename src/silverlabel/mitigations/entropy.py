"""``entropy``: the paper's mitigation, gold for the items where the teacher's distribution is flattest.

At B = 5 % and 25 % of the training set this is the paper's α; the paper replaced those labels with gold.
"""

from __future__ import annotations

from .base import PolicyInput, Selection, mask, register_policy, top_k


@register_policy("entropy")
def entropy_policy(ctx: PolicyInput) -> Selection:
    """The B items with the highest entropy of P_S (failed teacher calls first)."""
    return Selection(chosen=mask(ctx.n, top_k(ctx, ctx.entropy, ctx.budget)))
