"""Valid conclusions from teacher labels: estimates with confidence intervals, side by side for four methods.

From the teacher's annotations of N items (label and P_S) and gold labels for a sample of them, estimate the
prevalence of each class, or OLS / logistic coefficients of a class indicator on numeric covariates, by

- ``teacher``: the teacher's labels taken as truth (what people do today; its interval is not valid);
- ``classical``: the gold labels alone;
- ``ppi_teacher``: PPI++ with the teacher's P_S(class) as the surrogate;
- ``ppi_student``: PPI++ with a student's predicted probabilities as the surrogate, the student cross-fitted
  (:func:`cross_fit_student`);
- ``ppi_deployed``: PPI++ with the mean ``p:<label>`` of the students the user deploys (``silverlabel predict``'s
  output over the same items). Valid without cross-fitting only because no gold item was among what those students
  were trained or selected on: their folders record it (by text hash, else by item id) and an overlap is refused.

All the statistics are ppi_py's (``ppi_mean_ci``, ``ppi_ols_ci``, ``ppi_logistic_ci``, the ``classical_*`` baselines
and the ``*_power`` functions, with ``w`` = 1/pi for a design with inclusion probabilities pi, see
:mod:`silverlabel.sampling`); this module only wires annotations, gold and covariates to them. PPI++'s ``lam`` is
ppi_py's default: tuned from the data and clipped to [0, 1], so an uninformative surrogate costs almost nothing
(lam near 0 gives the classical interval) and an informative one narrows it.

The population is the annotated items minus prompt demonstrations (their teacher label saw their gold label);
every remaining item's P_S is the "unlabeled" part, gold items included, which makes the point estimate the
Horvitz-Thompson/Hajek form of Zrnic & Candes' active inference.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .corpus import read_predictions
from .errors import SilverlabelError
from .estimands import Estimand, Interval, Power, Prevalence, Sample, as_estimand, fit_intervals, power, within
from .files import read_table
from .progress import progress_bar
from .sampling import INCLUSION_COLUMN, check_inclusion
from .students import get_student

log = logging.getLogger(__name__)

METHODS = ("teacher", "classical", "ppi_teacher", "ppi_student", "ppi_deployed")
# ppi_py's intervals (classical and PPI alike) rest on a normal approximation, which needs about this many gold
# labels of a class (the n*p >= 10 rule for a share); below it they cover less than nominal. Measured with
# bench/coverage.py: a 5.75 % class of the toxic tweets with n = 100 gold labels (5.75 of them expected) is covered
# 0.864-0.876 of the time at nominal 0.90, and 0.874-0.895 at n = 200 (11.5 expected).
MIN_CLASS_GOLD = 10
METHOD_TITLES = {"teacher": "teacher as truth", "classical": "gold only (classical)",
                 "ppi_teacher": "PPI++ (teacher P_S)", "ppi_student": "PPI++ (student, cross-fitted)",
                 "ppi_deployed": "PPI++ (deployed student)", "gold": "all gold labels"}


@dataclass
class Estimates:
    """Every method's interval for every parameter, what they rest on, and the power analysis."""

    estimand: str
    level: float
    parameters: list[str]
    intervals: list[Interval]
    n_items: int  # the population (annotated items less demonstrations)
    n_gold: int
    design: str  # "uniform" (no weights) or "weighted" (inclusion probabilities)
    target_class: str | None = None
    covariates: list[str] = field(default_factory=list)
    question: dict = field(default_factory=dict)  # the estimand with its fields (Estimand.to_dict)
    title: str = ""  # the estimand described in words
    excluded_demos: int = 0
    power: list[Power] = field(default_factory=list)
    student: dict | None = None

    def get(self, method: str, parameter: str) -> Interval | None:
        return next((i for i in self.intervals if i.method == method and i.parameter == parameter), None)

    def effective_n(self, method: str, parameter: str) -> float | None:
        """How many classical gold labels ``method``'s interval is worth: n * (classical width / its width)^2."""
        c, m = self.get("classical", parameter), self.get(method, parameter)
        if c is None or m is None or not m.width > 0:
            return None
        return self.n_gold * (c.width / m.width) ** 2

    def table(self) -> pd.DataFrame:
        rows = []
        for i in self.intervals:
            ess = self.effective_n(i.method, i.parameter) if i.method.startswith("ppi") else None
            rows.append({"parameter": i.parameter, "method": i.method, "estimate": i.estimate, "lower": i.lower,
                         "upper": i.upper, "width": i.width, "effective_n": ess})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["table"] = self.table().replace({np.nan: None}).to_dict(orient="records")
        return d


# ----------------------------------------------------------------------------------------------- arrays in


def prevalence_intervals(gold: np.ndarray, gold_index: np.ndarray, teacher_probs: np.ndarray,
                         teacher_labels: np.ndarray, label_names: Sequence[str], *, level: float = 0.9,
                         weights: np.ndarray | None = None, student_probs: np.ndarray | None = None,
                         deployed_probs: np.ndarray | None = None) -> list[Interval]:
    """Each class's share of the N items, from arrays: ``gold`` holds class indices of the n gold items,
    ``gold_index`` their rows among the N; ``teacher_labels`` the teacher's class index per item (-1 for a
    failed call)."""
    names = list(label_names)
    design = Prevalence().design(names, None, range(len(teacher_labels)))
    return fit_intervals(design, Sample(np.asarray(gold_index), np.asarray(gold), weights), teacher_labels,
                         _surrogates(teacher_probs, student_probs, deployed_probs), level=level)


def _surrogates(teacher, student=None, deployed=None) -> dict[str, np.ndarray]:
    return {k: v for k, v in (("ppi_teacher", teacher), ("ppi_student", student), ("ppi_deployed", deployed))
            if v is not None}


# ----------------------------------------------------------------------------------------------- the student


def cross_fit_student(texts: Sequence[str], gold_index: np.ndarray, gold: np.ndarray, num_labels: int, *,
                      folds: int = 5, config=None, seed: int = 0) -> np.ndarray:
    """Student probabilities for every item, cross-fitted over the gold sample: K students, student k trained on
    the gold labels outside fold k; a gold item of fold k is scored by student k only (it never saw that item's
    label), every other item by the average of the K students (cross-prediction, Zrnic & Candes 2024; ppi_py's
    ``crossppi_*`` do the same averaging but take no weights and no PPI++ ``lam``, so the averaged predictions go
    to the weighted PPI++ functions instead). Folds are stratified by gold label where every class allows it."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from .config import TrainConfig

    config = config or TrainConfig(model="minilm", learning_rate=3e-4)
    n = len(gold)
    if n < 2 * folds:
        raise SilverlabelError(f"cross-fitting a student over {folds} folds needs at least {2 * folds} gold labels "
                               f"(have {n}); estimate without the student (student=False, --no-student) or label more")
    counts = np.bincount(gold, minlength=num_labels)
    stratify = counts[counts > 0].min() >= folds
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    texts = list(texts)
    out = np.zeros((len(texts), num_labels))
    others = np.ones(len(texts), dtype=bool)
    others[gold_index] = False
    with progress_bar(f"cross-fitting {folds} students", total=folds) as advance:
        for k, (train, held) in enumerate(splitter.split(np.zeros(n), gold if stratify else None)):
            train_fold = get_student(config.backend)
            run = train_fold([texts[gold_index[i]] for i in train], gold[train], num_labels=num_labels, config=config,
                             seed=seed + k, test_texts=texts)
            out[gold_index[held]] = run.probs[gold_index[held]]
            out[others] += run.probs[others] / folds
            advance(1)
    return out


# ----------------------------------------------------------------------------------------------- frames in


def deployed_surrogate(predictions: pd.DataFrame, seen: dict, pop: pd.DataFrame, gold_items, names: Sequence[str],
                       *, where: str) -> np.ndarray:
    """The deployed students' mean probabilities for every item of the population, in its order, after checking
    that none of them saw a gold item (PPI needs a surrogate independent of the gold labels it is checked on)."""
    from .cache import text_hash

    missing_cols = [f"p:{n}" for n in names if f"p:{n}" not in predictions]
    if missing_cols or "item" not in predictions:
        raise SilverlabelError(f"{where}: no column {(['item'] if 'item' not in predictions else missing_cols)[0]}; "
                               "pass a `silverlabel predict` output of students with these labels: "
                               f"{', '.join(names)}")
    if seen.get("unrecorded"):
        raise SilverlabelError(f"{where}: made by students with no record of their training items "
                               f"({seen['unrecorded'][0]}), so their independence from the gold sample cannot be "
                               "checked; use the cross-fitted student (student=True, --student) instead")
    frame = predictions.drop_duplicates("item").set_index(predictions["item"].drop_duplicates().astype(str))
    items = pop["item"].astype(str)
    absent = [it for it in items if it not in frame.index]
    if absent:
        raise SilverlabelError(f"{where}: no prediction for {len(absent)} of the {len(items)} annotated items "
                               f"(first: '{absent[0]}'); run `silverlabel predict` over the same data file, with "
                               "the same item ids (--id-column), as annotate")
    probs = frame.loc[items, [f"p:{n}" for n in names]].to_numpy(dtype=np.float64)
    blank = np.flatnonzero(np.isnan(probs).any(1))
    if len(blank):
        raise SilverlabelError(f"{where}: item '{items.iloc[blank[0]]}' has no prediction (the students skipped "
                               f"it); {len(blank)} such item(s) of the annotations")
    gold_set = set(map(str, gold_items))
    gold_rows = pop[items.isin(gold_set).to_numpy()]
    if "text" in pop:
        hashes = set(seen.get("text_hashes", ()))
        overlap = [str(it) for it, t in zip(gold_rows["item"], gold_rows["text"]) if text_hash(str(t)) in hashes]
    else:
        ids = set(seen.get("items", ()))
        overlap = [str(it) for it in gold_rows["item"] if str(it) in ids]
    if overlap:
        raise SilverlabelError(f"{where}: its students were trained or selected on {len(overlap)} of the "
                               f"{len(gold_rows)} gold items (first: '{overlap[0]}'), so they are no valid PPI "
                               "surrogate; use the cross-fitted student (student=True, --student) or students "
                               "trained without the gold items")
    return probs



def population(annotations: pd.DataFrame, label_names: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """The annotated items the estimates are about: demonstrations and failed teacher calls left out (counted)."""
    keep = annotations["label"].notna().to_numpy()
    demos = annotations["demo"].fillna(False).astype(bool).to_numpy() if "demo" in annotations else \
        np.zeros(len(annotations), dtype=bool)
    return annotations[keep & ~demos].reset_index(drop=True), int((keep & demos).sum())


def estimate(annotations: pd.DataFrame, label_names: Sequence[str], gold: pd.Series,
             estimand: Estimand | str = "prevalence", *, level: float = 0.9, inclusion: pd.Series | None = None,
             covariates: pd.DataFrame | None = None, student: bool = False, student_config=None, folds: int = 5,
             seed: int = 0, target_width: float | None = None, predictions: tuple | None = None,
             where: dict[str, str] | None = None) -> Estimates:
    """Estimates and intervals of every method (see the module docstring).

    ``annotations``: the annotate output (item, label, p:<label>, text for the student, optional demo);
    ``gold``: item -> gold label; ``estimand``: an :class:`~silverlabel.estimands.Estimand` (or a name with no
    fields, e.g. "prevalence"); ``inclusion``: item -> inclusion probability of the gold items (omit for a uniform
    sample); ``covariates``: a frame indexed by item holding the columns the estimand names.
    ``predictions``: the deployed students' output and what they were trained or selected on, as
    ``corpus.read_predictions`` returns them. ``where`` names the files for error messages (keys annotations, gold,
    data, predictions).
    """
    where = {"annotations": "annotations", "gold": "gold labels", "data": "data", "predictions": "predictions",
             **(where or {})}
    estimand = as_estimand(estimand)
    names = list(label_names)
    pop, n_demo, sample = gold_sample(annotations, names, gold, inclusion, where=where)
    items = pop["item"].astype(str).tolist()
    design = estimand.design(names, covariates, items, where=where["data"])
    sample = within(design, sample.index, sample.y, sample.weights, len(pop))
    n_params = len(design.targets[0][1])
    if len(sample.y) <= n_params:
        raise SilverlabelError(f"{where['gold']}: {len(sample.y)} usable gold labels for {n_params} parameter(s); a "
                               f"{estimand.name} estimate needs more gold labels than parameters (label more items)")
    # warned only once the input is known to be good: an error stays the only line
    failed = int(annotations["label"].isna().sum())
    if failed:
        log.warning("%d items have no teacher label (failed calls) and are left out of the population", failed)
    counts = np.bincount(sample.y, minlength=len(names))
    thin = [f"'{names[c]}' ({counts[c]})" for c, _ in design.targets if counts[c] < MIN_CLASS_GOLD]
    if thin:
        log.warning("few gold labels of %s: the intervals rest on a normal approximation that needs about %d of a "
                    "class and may cover less than %g %% (docs: README, valid conclusions); label more items",
                    ", ".join(thin), MIN_CLASS_GOLD, 100 * level)
    gold_index = design.rows[sample.index]
    surrogates = {"ppi_teacher": pop[[f"p:{n}" for n in names]].to_numpy(dtype=np.float64)}
    student_info = None
    if student:
        if "text" not in pop:
            raise SilverlabelError(f"{where['annotations']}: no column 'text' to train a student on; pass the "
                                   "annotate output or estimate without the student")
        surrogates["ppi_student"] = cross_fit_student(pop["text"].astype(str).tolist(), gold_index, sample.y,
                                                      len(names), folds=folds, config=student_config, seed=seed)
        student_info = {"folds": folds, "seed": seed,
                        "model": (student_config.model if student_config is not None else "minilm"),
                        "unlabeled_items": "average of the fold students"}
    if predictions is not None:
        frame, seen = predictions
        surrogates["ppi_deployed"] = deployed_surrogate(frame, seen or {}, pop, pop["item"].iloc[gold_index], names,
                                                        where=where["predictions"])
        if sample.weights is not None:
            # bench/coverage.py --deployed: on the imdb stand-in, gold drawn in proportion to the teacher's entropy
            # left the deployed student's 90 % intervals covering 0.866 (n=100) and 0.872 (n=200); uniform: 0.88-0.90
            log.warning("the gold sample was drawn with unequal inclusion probabilities (set from the teacher's "
                        "uncertainty); the deployed student's PPI++ intervals may cover less than %g %% then "
                        "(docs/benchmarks.md); a uniform sample suits deployed students", 100 * level)
    intervals = fit_intervals(design, sample, teacher_labels(pop, names), surrogates, level=level)
    plan = [] if target_width is None else power(design, sample, surrogates, half_width=target_width, level=level)
    return Estimates(estimand=estimand.name, level=level, parameters=design.parameters, intervals=intervals,
                     n_items=len(pop), n_gold=len(sample.y), design="uniform" if sample.weights is None else "weighted",
                     target_class=getattr(estimand, "target_class", None), covariates=estimand.covariate_names(),
                     excluded_demos=n_demo, power=plan, student=student_info, question=estimand.to_dict(),
                     title=estimand.describe())


def teacher_labels(pop: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """The teacher's class index per population item (-1 where it gave none)."""
    index = {n: i for i, n in enumerate(names)}
    return pop["label"].map(index).fillna(-1).to_numpy(dtype=np.int64)


def gold_sample(annotations: pd.DataFrame, names: Sequence[str], gold: pd.Series, inclusion: pd.Series | None, *,
                where: dict[str, str]) -> tuple[pd.DataFrame, int, Sample]:
    """The population (annotated items less demonstrations and failed calls), how many demonstrations were left
    out, and the gold sample in it (positions, class indices, weights 1/pi for a designed sample), after checking
    every gold label and inclusion probability against the annotations."""
    if "label_source" in annotations and (annotations["label_source"] == "human").any():
        # a merge output: its gold items carry one-hot P_S, so the surrogate would equal the truth where it is
        # checked and the correction would vanish
        raise SilverlabelError(f"{where['annotations']}: this is a `silverlabel merge` output (people's labels in "
                               "place of the teacher's); pass the `silverlabel annotate` output as the annotations "
                               "and the merge output as the gold labels")
    pop, n_demo = population(annotations, names)
    row = {it: i for i, it in enumerate(pop["item"].astype(str))}
    gold = gold.copy()
    gold.index = gold.index.astype(str)
    all_items = set(annotations["item"].astype(str))
    for it, lab in gold.items():
        if lab not in names:
            raise SilverlabelError(f"{where['gold']}: item '{it}' has gold label '{lab}', which is not one of the "
                                   f"labels of {where['annotations']}: {', '.join(names)}")
        if it not in all_items:
            raise SilverlabelError(f"{where['gold']}: item '{it}' is not in {where['annotations']}; gold labels "
                                   "must be for annotated items")
    demo_gold = [it for it in gold.index if it not in row]
    if demo_gold:
        log.warning("%d gold items are prompt demonstrations or failed teacher calls; left out of the estimation "
                    "sample (a demonstration's teacher label saw its gold label)", len(demo_gold))
        gold = gold.drop(demo_gold)
    weights = None
    if inclusion is not None:
        inc = inclusion.copy()
        inc.index = inc.index.astype(str)
        missing = [it for it in gold.index if it not in inc.index or pd.isna(inc.get(it))]
        if missing:
            raise SilverlabelError(f"{where['gold']}: item '{missing[0]}' has no {INCLUSION_COLUMN}; every gold "
                                   "item of a designed sample needs one")
        pi = check_inclusion(inc.loc[gold.index].to_numpy(), where=where["gold"], items=list(gold.index))
        weights = None if np.allclose(pi, pi[0]) else 1.0 / pi
    index = np.array([row[it] for it in gold.index], dtype=np.int64)
    y = np.array([names.index(lab) for lab in gold], dtype=np.int64)
    return pop, n_demo, Sample(index, y, weights)


# ----------------------------------------------------------------------------------------------- files in


def read_gold(path: str | Path, *, label_names: Sequence[str]) -> tuple[pd.Series, pd.Series | None]:
    """Gold labels (item -> label) and, when the file has them, inclusion probabilities, from a ``merge`` output
    (rows whose ``label_source`` is ``human``) or a CSV/JSONL/Parquet with columns item and label (and optionally
    inclusion_prob)."""

    path = Path(path)
    if not path.exists():
        raise SilverlabelError(f"{path}: no such file")
    frame = read_table(path)
    for col in ("item", "label"):
        if col not in frame.columns:
            raise SilverlabelError(f"{path}: no column '{col}'; gold labels need columns item and label (or pass "
                                   "a `silverlabel merge` output)")
    frame = frame.assign(item=frame["item"].astype(str))
    if "label_source" in frame.columns:
        frame = frame[frame["label_source"] == "human"]
    frame = frame[frame["label"].notna() & (frame["label"].astype(str).str.strip() != "")]
    dup = frame["item"].duplicated()
    if dup.any():
        raise SilverlabelError(f"{path}: item '{frame['item'][dup].iloc[0]}' appears twice; one gold label per item")
    allowed = set(label_names)
    for r, (it, lab) in enumerate(zip(frame["item"], frame["label"].astype(str).str.strip())):
        if lab not in allowed:
            raise SilverlabelError(f"{path}: row {frame.index[r] + 2} (item '{it}') has label '{lab}', which is not "
                                   f"one of the labels: {', '.join(label_names)}")
    gold = pd.Series(frame["label"].astype(str).str.strip().to_numpy(), index=frame["item"].to_numpy(),
                     dtype=object)
    inclusion = None
    if INCLUSION_COLUMN in frame.columns:
        values = pd.to_numeric(frame[INCLUSION_COLUMN], errors="coerce")
        check_inclusion(values.to_numpy(), where=str(path), items=frame["item"].tolist())
        inclusion = pd.Series(values.to_numpy(), index=frame["item"].to_numpy())
    if gold.empty:
        raise SilverlabelError(f"{path}: no gold labels in it")
    return gold, inclusion


def read_covariates(path: str | Path) -> pd.DataFrame:
    """A data table with an ``item`` column (the annotate output's item ids), indexed by item."""

    path = Path(path)
    if not path.exists():
        raise SilverlabelError(f"{path}: no such file")
    frame = read_table(path)
    if "item" not in frame.columns:
        raise SilverlabelError(f"{path}: no column 'item'; the covariates' data needs the annotate output's item ids "
                               "beside the covariates")
    frame = frame.assign(item=frame["item"].astype(str))
    dup = frame["item"].duplicated()
    if dup.any():
        raise SilverlabelError(f"{path}: item '{frame['item'][dup].iloc[0]}' appears twice; one row per item")
    return frame.set_index("item")


def estimate_files(records: pd.DataFrame, label_names: Sequence[str], gold: str | Path,
                   estimand: Estimand | str = "prevalence", *, annotations: str | Path = "annotations",
                   data: str | Path | None = None, predictions: str | Path | None = None, **options) -> Estimates:
    """:func:`estimate` from files: ``records``/``label_names`` as ``mitigations.workflow.read_annotations``
    returns them (read there, so this module does not depend on the mitigations), the gold file (``merge``
    output or item,label CSV, with inclusion probabilities when it has them) and the covariates' table."""
    gold_labels, inclusion = read_gold(gold, label_names=label_names)
    table = read_covariates(data) if data is not None else None
    deployed = read_predictions(predictions) if predictions is not None else None
    return estimate(records, label_names, gold_labels, estimand, inclusion=inclusion, covariates=table,
                    predictions=deployed, where={"annotations": str(annotations), "gold": str(gold),
                                                 "data": str(data), "predictions": str(predictions)}, **options)


def planning_gold(share: float, half_width: float, level: float) -> int:
    """Gold labels a classical interval needs for ``half_width`` if the prevalence were ``share``: z^2 p(1-p)/h^2,
    the closed form (a planning number before any gold exists; 0.5 is the worst case)."""
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - level) / 2))
    p = min(max(share, 0.0), 1.0)
    return max(1, math.ceil(z * z * p * (1 - p) / half_width ** 2))
