"""The difference of a class's share between two groups of items, told apart by a covariate.

Fitted as OLS of the class indicator on [1, in the first group] over the items of either group: the coefficient
is exactly the difference of the two shares, and ppi_py's OLS intervals (sandwich variance) carry it to PPI++.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import SilverlabelError
from .base import Design, Estimand, covariate_columns, register_estimand


@register_estimand
@dataclass(frozen=True)
class Difference(Estimand):
    name = "difference"
    title = "difference between groups"
    target_class: str
    covariate: str
    # the two groups' values of the covariate (first minus second); default (1, 0) for a 0/1 covariate
    groups: tuple | None = None
    split: float | None = None  # instead of groups: above the split minus at or below it (a numeric covariate)

    def __post_init__(self):
        if self.groups is not None and self.split is not None:
            raise SilverlabelError("difference: give groups or split, not both")
        if self.groups is not None and (len(self.groups) != 2 or self.groups[0] == self.groups[1]):
            raise SilverlabelError(f"difference: groups must be two different values of '{self.covariate}', "
                                   f"got {list(self.groups)}")

    def covariate_names(self) -> list[str]:
        return [self.covariate]

    def check_text_covariates(self) -> None:
        super().check_text_covariates()
        if self.covariate.startswith("contains:"):
            bad = [g for g in (self.groups or ()) if str(g) not in ("0", "1", "0.0", "1.0")]
            if bad:
                raise ValueError(f"difference: group '{bad[0]}' of covariate '{self.covariate}' does not exist; a "
                                 "contains: covariate is 1 (the text matches) or 0")
        elif self.groups is None and self.split is None:
            raise ValueError(f"difference: covariate '{self.covariate}' is a count; give split (a number: above it "
                             "minus at or below it)")

    def group_names(self) -> tuple[str, str]:
        if self.split is not None:
            return f"{self.covariate} > {self.split:g}", f"{self.covariate} <= {self.split:g}"
        a, b = self.groups if self.groups is not None else (1, 0)
        return f"{self.covariate} = {a}", f"{self.covariate} = {b}"

    def design(self, label_names: Sequence[str], covariates: pd.DataFrame | None, items, *,
               where: str = "data") -> Design:
        self.check(label_names)
        numeric = self.split is not None or self.groups is None
        values = covariate_columns(covariates, [self.covariate], items, where=where, numeric=numeric)[self.covariate]
        if self.split is not None:
            first = (values > self.split).to_numpy()
            rows = np.arange(len(values))
        else:
            if self.groups is None:
                if not values.isin([0, 1]).all():
                    raise SilverlabelError(f"{where}: covariate '{self.covariate}' is not 0/1; a difference on it "
                                           "needs groups (two of its values) or split (a number)")
                a, b = 1, 0
            else:
                a, b = self.groups
            in_a, in_b = _matches(values, a), _matches(values, b)
            for g, mask in ((a, in_a), (b, in_b)):
                if not mask.any():
                    shown = ", ".join(map(str, pd.unique(values)[:5]))
                    raise SilverlabelError(f"{where}: no item has {self.covariate} = {g}, a group of the difference "
                                           f"of {self.target_class}; its values include {shown}")
            rows = np.flatnonzero(in_a | in_b)
            first = in_a[rows]
        for side, mask in ((self.group_names()[0], first), (self.group_names()[1], ~first)):
            if not mask.any():
                raise SilverlabelError(f"{where}: no item is in group '{side}' of the difference of "
                                       f"{self.target_class}; choose another split")
        X = np.column_stack([np.ones(len(rows)), first.astype(np.float64)])
        return Design("ols", rows, X, [(list(label_names).index(self.target_class), [("difference", 1)])])

    def parameter(self) -> str:
        return "difference"

    def describe(self) -> str:
        a, b = self.group_names()
        return f"difference in the share of {self.target_class}: ({a}) minus ({b})"


def _matches(values: pd.Series, group) -> np.ndarray:
    """Items whose covariate is ``group``: numerically where both are numbers (1 and "1.0" are one group), else as
    text."""
    num = pd.to_numeric(values, errors="coerce")
    try:
        g = float(group)
    except (TypeError, ValueError):
        g = None
    if g is not None and num.notna().all():
        return (num == g).to_numpy()
    return (values.astype(str) == str(group)).to_numpy()
