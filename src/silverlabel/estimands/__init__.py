"""What an estimate is about: one registered object per estimand (prevalence, difference between groups, OLS,
logistic), shared by ``silverlabel estimate``, a study's ``[[estimates]]`` and ``[[hypotheses]]`` and the report.

Adding an estimand is one module here with a subclass of :class:`Estimand` decorated by :func:`register_estimand`,
and its import below.
"""

from .base import (
    ESTIMANDS,
    TEXT_COVARIATES,
    Design,
    Estimand,
    Interval,
    Power,
    Sample,
    as_estimand,
    check_covariate_name,
    covariate_columns,
    fit_intervals,
    gold_reference,
    make_estimand,
    power,
    reference,
    register_estimand,
    text_covariates,
    within,
)
from .difference import Difference
from .prevalence import Prevalence
from .regression import OLS, Logistic

__all__ = ["ESTIMANDS", "TEXT_COVARIATES", "Design", "Difference", "Estimand", "Interval", "Logistic", "OLS",
           "Power", "Prevalence", "Sample", "as_estimand", "check_covariate_name", "covariate_columns",
           "fit_intervals", "gold_reference", "make_estimand", "power", "reference", "register_estimand", "text_covariates", "within"]
