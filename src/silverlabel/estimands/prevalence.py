"""The share of each class (or one class) among the items."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import SilverlabelError
from .base import Design, Estimand, register_estimand


@register_estimand
@dataclass(frozen=True)
class Prevalence(Estimand):
    name = "prevalence"
    title = "prevalence"
    target_class: str | None = None  # None: every class

    def design(self, label_names: Sequence[str], covariates, items, *, where: str = "data") -> Design:
        self.check(label_names)
        classes = range(len(label_names)) if self.target_class is None else [label_names.index(self.target_class)]
        return Design("mean", np.arange(len(items)), None, [(c, [(label_names[c], 0)]) for c in classes])

    def parameter(self) -> str:
        if self.target_class is None:
            raise SilverlabelError("a prevalence hypothesis needs target_class (the class whose share is tested)")
        return self.target_class

    def null(self, threshold: float | None = None) -> float:
        if threshold is None or not 0 <= threshold <= 1:
            raise SilverlabelError(f"a prevalence needs a threshold between 0 and 1 (the share tested against), got "
                                   f"{threshold}")
        return float(threshold)

    def describe(self) -> str:
        return f"prevalence of {self.target_class}" if self.target_class else "prevalence of each class"
