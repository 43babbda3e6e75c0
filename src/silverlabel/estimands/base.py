"""The estimand contract and the fits every estimand reduces to.

Every estimand here reduces to a class indicator ("the gold label is c") fitted on some rows of the population by
one of three fits ppi_py offers: a mean, OLS or logistic regression. An estimand says which rows, which design
matrix, which classes and which coefficients are its parameters (:class:`Design`); :func:`fit_intervals` then
gives every method's interval from ppi_py (teacher labels as truth, gold alone, PPI++ per surrogate) and
:func:`power` the gold labels a target width needs.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np
import pandas as pd

from ..errors import SilverlabelError

ESTIMANDS: dict[str, type[Estimand]] = {}
# covariates a study computes from each text; `contains:REGEX` is 1 where the text matches (case-insensitive)
TEXT_COVARIATES = ("chars", "words")


def _ppi():
    try:
        import ppi_py
    except ImportError:  # a core dependency, but say what to do if someone removed it
        raise SilverlabelError("estimates need ppi_py: pip install 'ppi-python>=0.2.3'") from None
    _cache_numba_kernels(ppi_py.ppi)
    return ppi_py


@functools.cache  # once per process and module
def _cache_numba_kernels(module) -> None:
    """ppi_py's numba kernels (the OLS, logistic and Poisson statistics) are compiled without ``cache=True``, so
    every process that asked for a regression interval compiled them again: 5.0 s (OLS) and 3.5 s (logistic) on
    one core here, against 0.2 and 0.04 s with numba's own on-disk cache (beside ppi_py's sources, or numba's
    user-wide folder where those are read-only), which this turns on. Numba keys the cache by the source file and
    the argument types, so an upgraded ppi_py compiles afresh."""
    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:  # no numba, no kernels to cache
        return
    for value in vars(module).values():
        if isinstance(value, CPUDispatcher):
            try:
                value.enable_caching()
            except RuntimeError:  # numba found no writable cache folder: compile per process, as before
                return


@dataclass
class Interval:
    """One method's estimate of one parameter and its confidence interval."""

    method: str
    parameter: str
    estimate: float
    lower: float
    upper: float

    @property
    def width(self) -> float:
        return self.upper - self.lower


@dataclass
class Design:
    """What an estimand fits on a population of N items: the rows it uses, the fit, its design matrix over those
    rows (None for a mean), and per class index the parameters it reports as (name, coefficient index)."""

    fit: str  # mean | ols | logistic
    rows: np.ndarray
    X: np.ndarray | None
    targets: list[tuple[int, list[tuple[str, int]]]]

    @property
    def parameters(self) -> list[str]:
        return [name for _, params in self.targets for name, _ in params]


@dataclass(frozen=True)
class Estimand:
    """The base of every estimand: its fields are what a user sets (``target_class``, ``covariates``, ...); each
    subclass says which it takes and builds its :class:`Design`."""

    name: ClassVar[str]
    title: ClassVar[str]  # how the report and the terminal describe it

    def check(self, label_names: Sequence[str]) -> None:
        """An error in the API's words when a field names no class."""
        target = getattr(self, "target_class", None)
        if target is not None and target not in label_names:
            raise SilverlabelError(f"{self.name}: target_class '{target}' is not one of the labels: "
                                   f"{', '.join(label_names)}")

    def covariate_names(self) -> list[str]:
        """The covariate columns the design reads."""
        return []

    def check_text_covariates(self) -> None:
        """When a study computes the covariates from the texts (:func:`text_covariates`), what can be known of
        their values before any labelling is checked here (a group no text can be in)."""
        for name in self.covariate_names():
            check_covariate_name(name)

    def design(self, label_names: Sequence[str], covariates: pd.DataFrame | None, items: Sequence[str], *,
               where: str = "data") -> Design:
        raise NotImplementedError

    def tested(self, coefficient: str | None = None) -> str:
        """The parameter a hypothesis about this estimand decides on (``coefficient`` only for a regression)."""
        if coefficient is not None:
            raise SilverlabelError(f"{self.name}: coefficient is for ols and logistic only")
        return self.parameter()

    def parameter(self) -> str:
        raise NotImplementedError

    def null(self, threshold: float | None = None) -> float:
        """The value a hypothesis tests against: 0 (no difference, no effect) unless the estimand says otherwise."""
        if threshold is not None:
            raise SilverlabelError(f"{self.name}: threshold is for a prevalence; a {self.name} is tested against 0")
        return 0.0

    def describe(self) -> str:
        return self.title

    def to_dict(self) -> dict:
        return {"estimand": self.name, **{k: v for k, v in asdict(self).items() if v not in (None, (), [])}}


def register_estimand(cls: type[Estimand]) -> type[Estimand]:
    ESTIMANDS[cls.name] = cls
    return cls


def make_estimand(name: str, **given) -> Estimand:
    """The estimand ``name`` with the fields it takes; a field it does not take (set to anything but empty) is
    an error naming the ones it does."""
    if name not in ESTIMANDS:
        raise SilverlabelError(f"estimand '{name}' is unknown; choose one of {', '.join(ESTIMANDS)}")
    cls = ESTIMANDS[name]
    names = [f.name for f in fields(cls)]
    given = {k: v for k, v in given.items() if v is not None and not (isinstance(v, (list, tuple)) and not v)}
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise SilverlabelError(f"estimand '{name}' takes no {unknown[0]}; it takes: {', '.join(names) or 'nothing'}")
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    try:
        return cls(**given)
    except TypeError as exc:  # a required field is missing
        missing = re.findall(r"'(\w+)'", str(exc))
        raise SilverlabelError(f"estimand '{name}' needs {', '.join(missing) or 'more fields'}") from None


def as_estimand(value: Estimand | str, **given) -> Estimand:
    return value if isinstance(value, Estimand) else make_estimand(value, **given)


# ----------------------------------------------------------------------------------------------- covariates


def check_covariate_name(name: str) -> str:
    """A covariate a study can compute from a text: ``chars``, ``words`` or ``contains:REGEX``."""
    if name in TEXT_COVARIATES:
        return name
    if name.startswith("contains:") and name[len("contains:"):]:
        try:
            re.compile(name[len("contains:"):])
        except re.error as exc:
            raise ValueError(f"covariate '{name}': not a valid regular expression ({exc})") from None
        return name
    raise ValueError(f"covariate '{name}' is unknown; a study computes chars, words or contains:REGEX from each "
                     "text")


def text_covariates(items, texts, names: Sequence[str]) -> pd.DataFrame:
    """The covariates a study can name, computed from each text (indexed by item): its length in characters and
    in words, and 1/0 for whether it matches a regular expression (case-insensitive)."""
    texts = pd.Series(list(texts), index=[str(i) for i in items], dtype=object).astype(str)
    out = {}
    for n in names:
        if n == "chars":
            out[n] = texts.str.len()
        elif n == "words":
            out[n] = texts.str.split().str.len()
        else:
            out[n] = texts.str.contains(n[len("contains:"):], case=False, regex=True)
    return pd.DataFrame({n: v.astype(float) for n, v in out.items()}, index=texts.index)


def covariate_columns(covariates: pd.DataFrame | None, names: Sequence[str], items: Sequence[str], *,
                      where: str, numeric: bool = True) -> pd.DataFrame:
    """The named columns for every item, in item order; a missing column, a non-numeric value (when ``numeric``)
    or an item without a row or value is an error naming the file and column."""
    if not names:
        raise SilverlabelError("a regression needs covariates (numeric columns of the data)")
    if covariates is None:
        raise SilverlabelError(f"covariates {', '.join(names)} need the data holding them (a table with an item "
                               "column)")
    cols = []
    for name in names:
        if name not in covariates.columns:
            raise SilverlabelError(f"{where}: no column '{name}' for the covariates; columns are "
                                   f"{', '.join(map(str, covariates.columns))}")
        values = covariates[name]
        if numeric:
            values = pd.to_numeric(covariates[name], errors="coerce")
            bad = values.isna() & covariates[name].notna()
            if bad.any():
                first = covariates.index[bad.to_numpy()][0]
                raise SilverlabelError(f"{where}: column '{name}' is not numeric (item '{first}' has "
                                       f"'{covariates[name].loc[first]}'); covariates must be numbers")
        cols.append(values)
    frame = pd.concat(cols, axis=1)
    frame.index = frame.index.astype(str)
    missing = [it for it in items if it not in frame.index]
    if missing:
        raise SilverlabelError(f"{where}: item '{missing[0]}' has no row; every annotated item needs its "
                               "covariates")
    frame = frame.loc[list(items)]
    nan = frame.isna().any(axis=1).to_numpy()
    if nan.any():
        it = frame.index[nan][0]
        col = frame.columns[frame.loc[it].isna().to_numpy()][0]
        raise SilverlabelError(f"{where}: item '{it}' has no value in column '{col}'; fill it or drop the item")
    return frame


# ----------------------------------------------------------------------------------------------- fits


def _alpha(level: float) -> float:
    if not 0 < level < 1:
        raise SilverlabelError(f"level must be in (0, 1), e.g. 0.9, got {level}")
    return 1 - level


@dataclass
class Sample:
    """The gold sample within a design's rows: positions among those rows, class indices and weights."""

    index: np.ndarray
    y: np.ndarray
    weights: np.ndarray | None = None


def within(design: Design, gold_index: np.ndarray, y: np.ndarray, weights: np.ndarray | None,
           n_items: int) -> Sample:
    """The gold items (positions among the N population items) that fall in the design's rows."""
    pos = np.full(n_items, -1, dtype=np.int64)
    pos[design.rows] = np.arange(len(design.rows))
    gi = pos[np.asarray(gold_index, dtype=np.int64)]
    keep = gi >= 0
    return Sample(gi[keep], np.asarray(y)[keep], None if weights is None else np.asarray(weights)[keep])


def _bounds(fit: str, ppi, alpha: float, X, y, w, Xg=None, f_gold=None, f_all=None):
    """(lower, upper) arrays of one fit: classical on (X, y) with weights w, or PPI++ with surrogate f. A logistic
    fit of labels that are all one class has no estimate (the coefficients run off to infinity), nor has a PPI++
    logistic fit whose Hessian is singular: NaN bounds, which no interval test calls significant."""
    if fit == "logistic" and f_all is None and np.ptp(y) == 0:
        nan = np.full(X.shape[1], np.nan)
        return nan, nan
    if f_all is None:
        if fit == "mean":
            return ppi.classical_mean_ci(y, w=w, alpha=alpha)
        if fit == "ols":
            return ppi.classical_ols_ci(X, y, w=w, alpha=alpha)
        if w is None:
            return ppi.classical_logistic_ci(X, y, alpha=alpha)
        # classical_logistic_ci takes no weights; ppi_logistic_ci with lam=0 is the weighted classical one
        zero = np.zeros(len(y))
        return ppi.ppi_logistic_ci(X, y, zero, X, zero, alpha=alpha, lam=0, w=w)
    if fit == "mean":
        return ppi.ppi_mean_ci(y, f_gold, f_all, alpha=alpha, w=w)
    if fit == "ols":
        return ppi.ppi_ols_ci(Xg, y, f_gold, X, f_all, alpha=alpha, w=w)
    try:
        return ppi.ppi_logistic_ci(Xg, y, f_gold, X, f_all, alpha=alpha, w=w)
    except (np.linalg.LinAlgError, ValueError):  # e.g. a surrogate near 0 or 1 everywhere: a singular Hessian
        nan = np.full(X.shape[1], np.nan)
        return nan, nan


def fit_intervals(design: Design, sample: Sample, teacher_labels: np.ndarray | None,
                  surrogates: dict[str, np.ndarray], *, level: float, classical: bool = True) -> list[Interval]:
    """Every method's interval of every parameter: ``teacher`` (its labels over the rows taken as truth; skipped
    when ``teacher_labels`` is None), ``classical`` (the gold sample alone; skipped when ``classical`` is False)
    and one PPI++ interval per surrogate (method name -> N x classes probabilities; ppi_py's ``lam`` tuned and
    clipped to [0, 1])."""
    ppi = _ppi()
    alpha = _alpha(level)
    X = design.X
    Xg = None if X is None else X[sample.index]
    out = []
    for c, params in design.targets:
        y = (sample.y == c).astype(np.float64)
        bounds = {}
        if teacher_labels is not None:
            naive = (np.asarray(teacher_labels)[design.rows] == c).astype(np.float64)
            bounds["teacher"] = _bounds(design.fit, ppi, alpha, X, naive, None)
        if classical:
            bounds["classical"] = _bounds(design.fit, ppi, alpha, Xg, y, sample.weights)
        for method, probs in surrogates.items():
            if probs is not None:
                f = np.asarray(probs)[design.rows, c].astype(np.float64)
                bounds[method] = _bounds(design.fit, ppi, alpha, X, y, sample.weights, Xg, f[sample.index], f)
        for name, j in params:
            for method, (lo, hi) in bounds.items():
                lo_j, hi_j = float(np.ravel(lo)[j]), float(np.ravel(hi)[j])
                out.append(Interval(method, name, (lo_j + hi_j) / 2, lo_j, hi_j))
    return out


@dataclass
class Power:
    """Gold labels needed for a target half-width of one parameter, from a pilot sample."""

    parameter: str
    half_width: float
    classical: int
    ppi_teacher: int | None
    ppi_student: int | None = None
    ppi_corr_teacher: float | None = None
    ppi_corr_student: float | None = None
    # sd of one gold label's influence on the estimate (classical), from the pilot: width(n) = 2 z sd / sqrt(n)
    sd: float | None = None


def power(design: Design, sample: Sample, surrogates: dict[str, np.ndarray], *, half_width: float,
          level: float) -> list[Power]:
    """Gold labels for a target half-width, per parameter, from this (pilot) sample.

    Classical: n = (z sd / h)^2 with sd the pilot's per-label standard deviation of the estimate (sd = half-width
    * sqrt(n) / z of the pilot's classical interval). PPI: ppi_py's ``ppi_*_power`` cheapest pair for that
    classical n as its ``effective_n`` (the PPI correlation rho from the pilot; a prediction costs nothing, an
    unlabeled item nothing, and the labeled plus unlabeled items at most the N items there are), i.e. about
    n (1 - rho^2) for N much larger than n. A surrogate negatively correlated with the truth gains nothing (PPI++
    clips lam to [0, 1]), so there the PPI number is the classical one.
    """
    from scipy.stats import norm

    ppi = _ppi()
    if not half_width > 0:
        raise SilverlabelError(f"target_width must be a positive half-width, got {half_width}")
    z = float(norm.ppf(1 - (1 - level) / 2))
    n, n_max = len(sample.y), len(design.rows)
    Xg = None if design.X is None else design.X[sample.index]
    out = []
    for c, params in design.targets:
        y = (sample.y == c).astype(np.float64)
        lo, hi = _bounds(design.fit, ppi, 1 - level, Xg, y, sample.weights)
        for name, j in params:
            sd = float((np.ravel(hi)[j] - np.ravel(lo)[j]) / 2 * math.sqrt(n) / z)
            n_classical = max(1, math.ceil((z * sd / half_width) ** 2))
            res = {}
            for method in ("teacher", "student"):
                probs = surrogates.get(f"ppi_{method}")
                if probs is None:
                    continue
                f = np.asarray(probs)[design.rows][sample.index, c].astype(np.float64)
                try:
                    if design.fit == "mean":
                        r = ppi.ppi_mean_power(y, f, cost_Y=1.0, cost_Yhat=1e-9, effective_n=n_classical,
                                               n_max=n_max, w=sample.weights)
                    else:
                        fn = ppi.ppi_ols_power if design.fit == "ols" else ppi.ppi_logistic_power
                        r = fn(Xg, y, f, 0.0, 1.0, 1e-9, coord=j, effective_n=n_classical, n_max=n_max,
                               w=sample.weights)
                    corr = float(r["ppi_corr"])
                    res[method] = (int(r["n"]) if corr > 0 else n_classical, corr)
                except (ValueError, np.linalg.LinAlgError):  # a constant surrogate has no correlation
                    res[method] = (n_classical, 0.0)
            out.append(Power(parameter=name, half_width=half_width, classical=n_classical,
                             ppi_teacher=res.get("teacher", (None, None))[0],
                             ppi_student=res.get("student", (None, None))[0],
                             ppi_corr_teacher=res.get("teacher", (None, None))[1],
                             ppi_corr_student=res.get("student", (None, None))[1], sd=sd))
    return out


def gold_reference(estimand: Estimand, label_names: Sequence[str], gold: pd.Series, covariates, *, level: float,
                   where: str = "data") -> tuple[Design, list[Interval]]:
    """:func:`reference` for the items of ``gold`` (item -> gold label), every one of them labelled, with the
    design it was fitted on (its rows: the items the estimand uses)."""
    names = list(label_names)
    design = estimand.design(names, covariates, [str(i) for i in gold.index], where=where)
    return design, reference(design, np.array([names.index(lab) for lab in gold], dtype=np.int64), level=level)


def reference(design: Design, labels: np.ndarray, *, level: float) -> list[Interval]:
    """Every parameter from every row's gold label (class indices over the N population items): the classical
    interval on all of them, what a study with full gold would conclude (method ``gold``)."""
    sample = Sample(np.arange(len(design.rows)), np.asarray(labels)[design.rows])
    return [Interval("gold", i.parameter, i.estimate, i.lower, i.upper)
            for i in fit_intervals(design, sample, None, {}, level=level) if i.method == "classical"]

