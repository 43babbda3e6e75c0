"""OLS and logistic regression of a class indicator on numeric covariates (with an intercept)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import SilverlabelError
from .base import Design, Estimand, covariate_columns, register_estimand


@dataclass(frozen=True)
class _Regression(Estimand):
    fit: ClassVar[str]
    target_class: str
    covariates: tuple[str, ...]

    def covariate_names(self) -> list[str]:
        return list(self.covariates)

    def design(self, label_names: Sequence[str], covariates, items, *, where: str = "data") -> Design:
        self.check(label_names)
        X = covariate_columns(covariates, list(self.covariates), items, where=where).to_numpy(dtype=np.float64)
        params = list(enumerate(["intercept", *self.covariates]))
        return Design(self.fit, np.arange(len(items)), np.column_stack([np.ones(len(X)), X]),
                      [(list(label_names).index(self.target_class), [(n, j) for j, n in params])])

    def tested(self, coefficient: str | None = None) -> str:
        name = coefficient or self.covariates[0]
        if name not in ("intercept", *self.covariates):
            raise SilverlabelError(f"{self.name}: coefficient '{name}' is not one of intercept, "
                                   f"{', '.join(self.covariates)}")
        return name

    def describe(self) -> str:
        return f"{self.title} of {self.target_class} on {', '.join(self.covariates)}"


@register_estimand
@dataclass(frozen=True)
class OLS(_Regression):
    name = "ols"
    title = "OLS"
    fit = "ols"


@register_estimand
@dataclass(frozen=True)
class Logistic(_Regression):
    name = "logistic"
    title = "logistic regression"
    fit = "logistic"
