"""Do the conclusions survive another prompt or another teacher? Hypotheses decided by every teacher configuration.

A *configuration* is one teacher x instruction variant x k_shot x demonstration set (a study labels each once into
the shared annotation cache). A hypothesis (:class:`~silverlabel.config.HypothesisSpec`) tests "the parameter
equals ``null``" two-sided at a level; its *decision* is ``+`` or ``-`` (significant, with that sign) or ``0``
(not significant). Each configuration decides it twice:

- ``teacher``: the teacher's labels taken as truth (what a study without gold reports);
- ``ppi_teacher``: PPI++ with the teacher's P_S and a uniform gold sample of ``gold_size`` items, drawn
  ``draws`` times (the same draws for every configuration);

and ``classical`` (the gold sample alone) is kept beside them as the baseline. The *reference* decision is the
classical test on every item's gold label where the data has them (a study of shipped data), else on the gold
sample alone (``estimate`` with a user's gold file), and says which. Against it, as in Baumann et al. (2025,
"Large Language Model Hacking"): a Type I error is a significant decision where the reference is not, Type II the
reverse, Type S a significant decision of the wrong sign. The range of the estimates over configurations is how far
a user choosing a configuration could push the result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import HypothesisSpec, StudyConfig
from .errors import SilverlabelError
from .estimands import Sample, fit_intervals, gold_reference, text_covariates, within
from .inference import population, read_covariates, read_gold, teacher_labels
from .progress import progress_bar

log = logging.getLogger(__name__)

METHODS = ("teacher", "classical", "ppi_teacher")
ERRORS = ("type_I", "type_II", "type_S")
DECISIONS = {"+": "significant +", "-": "significant −", "0": "not significant", None: "—"}  # in words


@dataclass
class Configuration:
    """One teacher configuration's annotations (item, label, p:<label>, optional demo) and what made them."""

    name: str
    annotations: pd.DataFrame
    teacher: str = ""
    instruction: str = "default"
    k_shot: int | None = None
    demo_seed: int | None = None
    meta: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"name": self.name, "teacher": self.teacher, "instruction": self.instruction, "k_shot": self.k_shot,
                "demo_seed": self.demo_seed, **self.meta}


def decide(lower: float, upper: float, null: float) -> str:
    """``+`` or ``-`` when the interval excludes ``null`` (significant, that sign), else ``0``."""
    return "+" if lower > null else "-" if upper < null else "0"


def error_kind(decision: str, ref: str) -> str | None:
    """Which error a decision makes against the reference decision (None: none)."""
    if ref == "0":
        return None if decision == "0" else "type_I"
    if decision == "0":
        return "type_II"
    return "type_S" if decision != ref else None


def uniform_draws(items: Sequence[str], gold: pd.Series, size: int, draws: int, seed: int) -> list[pd.Series]:
    """``draws`` uniform gold samples of ``size`` items (without replacement) from ``items``, each item -> label."""
    items = np.asarray([str(i) for i in items])
    if size >= len(items):
        raise SilverlabelError(f"gold_size {size} is not below the {len(items)} items the configurations share; "
                               "choose a smaller gold_size")
    rng = np.random.default_rng(seed)
    gold = gold.copy()
    gold.index = gold.index.astype(str)
    out = []
    for _ in range(draws):
        pick = items[np.sort(rng.choice(len(items), size, replace=False))]
        out.append(pd.Series(gold.loc[pick].to_numpy(), index=pick, dtype=object))
    return out


class _Fitted:
    """One configuration's population and design for one estimand: built once, then fitted per gold draw."""

    def __init__(self, conf: Configuration, names: list[str], estimand, covariates, where: str):
        self.pop, _ = population(conf.annotations, names)
        self.items = self.pop["item"].astype(str).tolist()
        self.row = {it: i for i, it in enumerate(self.items)}
        self.design = estimand.design(names, covariates, self.items, where=where)
        self.labels = teacher_labels(self.pop, names)
        self.probs = self.pop[[f"p:{n}" for n in names]].to_numpy(dtype=np.float64)

    def sample(self, gold: pd.Series, names: list[str]) -> Sample:
        keep = [it for it in gold.index if it in self.row]
        index = np.array([self.row[it] for it in keep], dtype=np.int64)
        y = np.array([names.index(lab) for lab in gold.loc[keep]], dtype=np.int64)
        return within(self.design, index, y, None, len(self.items))

    def intervals(self, gold: pd.Series, names: list[str], level: float, *, teacher: bool, known: dict) -> dict:
        """Every method's intervals with this gold draw. The gold-only interval depends on the gold items alone,
        so ``known`` (gold items -> its intervals) spares refitting it for configurations that share them (the
        logistic fits are the slow part of a multiverse)."""
        sample = self.sample(gold, names)
        key = tuple(sorted(self.items[self.design.rows[i]] for i in sample.index))
        out = fit_intervals(self.design, sample, self.labels if teacher else None, {"ppi_teacher": self.probs},
                            level=level, classical=key not in known)
        got = {(i.method, i.parameter): i for i in out}
        if key in known:
            got.update(known[key])
        else:
            known[key] = {k: v for k, v in got.items() if k[0] == "classical"}
        return got


def evaluate_hypothesis(hypothesis: HypothesisSpec, configurations: Sequence[Configuration],
                        label_names: Sequence[str], draws: Sequence[pd.Series], *, all_gold: pd.Series | None = None,
                        covariates: pd.DataFrame | None = None, where: str = "data") -> dict:
    """One hypothesis decided by every configuration and method for every gold draw, against the reference
    (classical on ``all_gold``, item -> label for every item, when given; else each draw's classical decision).
    ``covariates``: indexed by item, the columns the estimand names."""
    names = list(label_names)
    estimand = hypothesis.estimand_object()
    estimand.check(names)
    param = estimand.tested(hypothesis.coefficient)
    null, level = hypothesis.null, hypothesis.level
    if not configurations:
        raise SilverlabelError(f"hypothesis '{hypothesis.name}': no teacher configuration to decide it")
    seen = [c.name for c in configurations]
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise SilverlabelError(f"two configurations are called '{dup[0]}'; give each annotations file its own name")
    fitted = [_Fitted(c, names, estimand, covariates, where) for c in configurations]
    ref = None
    if all_gold is not None:
        design, intervals = gold_reference(estimand, names, all_gold, covariates, level=level, where=where)
        r = next(i for i in intervals if i.parameter == param)
        if not np.isfinite([r.lower, r.upper]).all():
            raise SilverlabelError(f"hypothesis '{hypothesis.name}': the gold labels of all the items are one class "
                                   f"for {param}, so there is no reference to decide against; test another class")
        ref = {"source": "all gold labels", "n": len(design.rows), "estimate": r.estimate, "lower": r.lower,
               "upper": r.upper, "decision": decide(r.lower, r.upper, null)}
    counts = {m: dict.fromkeys(ERRORS, 0) | {"decisions": 0, "no_estimate": 0} for m in METHODS}
    rows, known = [], {}
    for conf, fit in zip(configurations, fitted):
        row = {**conf.describe(), "n_items": len(fit.items), "draws": []}
        for d, gold in enumerate(draws):
            got = fit.intervals(gold, names, level, teacher=d == 0, known=known)
            if d == 0:
                t = got["teacher", param]
                row["teacher"] = _decision(t, null)
            draw_ref = ref["decision"] if ref is not None else _decision(got["classical", param], null)["decision"]
            entry = {"reference": draw_ref}
            for method in METHODS:
                i = got.get((method, param))
                dec = row["teacher"] if method == "teacher" else _decision(i, null)
                kind = error_kind(dec["decision"], draw_ref)
                counts[method]["decisions"] += 1
                counts[method]["no_estimate"] += dec["estimate"] is None
                if kind:
                    counts[method][kind] += 1
                if method != "teacher":
                    entry[method] = {**dec, "error": kind}
            row["teacher"]["error"] = error_kind(row["teacher"]["decision"],
                                                 ref["decision"] if ref is not None else entry["reference"])
            row["draws"].append(entry)
        for method in ("classical", "ppi_teacher"):
            decs = [e[method] for e in row["draws"]]
            row[method] = {**decs[0], **{f"{k}_share": sum(e["error"] == k for e in decs) / len(decs)
                                         for k in ERRORS}}
        rows.append(row)
    # no_estimate: decisions made without an estimate (counted as "not significant"), so a reader sees them
    errors = {m: {**{f"n_{k}": c[k] for k in ERRORS}, "decisions": c["decisions"], "no_estimate": c["no_estimate"],
                  **{k: c[k] / c["decisions"] for k in ERRORS},
                  "any": sum(c[k] for k in ERRORS) / c["decisions"]} for m, c in counts.items()}
    return {"name": hypothesis.name, "question": estimand.to_dict(), "title": estimand.describe(), "parameter": param,
            "null": null, "level": level, "gold_size": len(draws[0]), "draws": len(draws),
            "reference": ref or {"source": "each gold sample alone (no gold for every item)", "decision": None},
            "configurations": rows, "errors": errors, "range": _ranges(rows),
            "disagree": [r["name"] for r in rows if r["teacher"]["error"] or r["ppi_teacher"]["decision"] !=
                         (ref["decision"] if ref else r["draws"][0]["reference"])]}


def _decision(interval, null: float) -> dict:
    """An interval and its decision; one with no estimate (a logistic fit of labels all of one class) is kept as
    None and decides "not significant": nothing could be claimed from it."""
    if not np.isfinite([interval.lower, interval.upper]).all():
        return {"estimate": None, "lower": None, "upper": None, "decision": "0", "note": "no estimate"}
    return {"estimate": interval.estimate, "lower": interval.lower, "upper": interval.upper,
            "decision": decide(interval.lower, interval.upper, null)}


def _ranges(rows: list[dict]) -> dict:
    """How far a result can be pushed by choosing a configuration: the lowest and highest estimate and the
    decisions on offer, per method (PPI++ and classical: within the first gold draw)."""
    out = {}
    for method in METHODS:
        vals = [r[method] if method == "teacher" else r["draws"][0][method] for r in rows]
        est = [v["estimate"] for v in vals if v["estimate"] is not None]
        out[method] = {"low": min(est, default=None), "high": max(est, default=None),
                       "decisions": sorted({v["decision"] for v in vals})}
    return out


def evaluate_files(hypotheses: Sequence[HypothesisSpec], configurations: Sequence[Configuration],
                   label_names: Sequence[str], gold: str | Path, *, data: str | Path | None = None) -> list[dict]:
    """``silverlabel estimate --hypotheses``: each hypothesis decided by every annotations file (a configuration)
    with the one gold sample in ``gold``; with no gold for every item, the reference is that sample's classical
    decision (the result says so)."""
    gold_labels, inclusion = read_gold(gold, label_names=label_names)
    if inclusion is not None and not np.allclose(inclusion, inclusion.iloc[0]):
        raise SilverlabelError(f"{gold}: a designed sample (unequal inclusion_prob); hypotheses across "
                               "configurations need a uniform gold sample (`select` without a design)")
    for conf in configurations:
        have = set(conf.annotations["item"].astype(str))
        absent = [it for it in gold_labels.index.astype(str) if it not in have]
        if absent:
            raise SilverlabelError(f"{gold}: item '{absent[0]}' is not in the annotations of configuration "
                                   f"'{conf.name}'; every configuration must label the gold items")
    covariates = read_covariates(data) if data is not None else None
    return [evaluate_hypothesis(h, configurations, label_names, [gold_labels], covariates=covariates, where=str(data))
            for h in hypotheses]


# ----------------------------------------------------------------------------------------------- in a study


def configurations_of(config: StudyConfig, records: dict, dataset: str, teachers: Sequence[str] = ()) -> list:
    """The study's teacher configurations of a dataset: every instruction variant x k_shot (its teacher spec)
    x demonstration set whose records were made, the training items only."""
    out = []
    for t in config.teachers:
        if teachers and t.name not in teachers:
            continue
        for instruction, spec in t.variants():
            for d in spec.demo_seeds:
                frame = records.get((dataset, spec.name), {}).get(d)
                if frame is None:
                    continue
                frame = frame[frame["split"] == "train"].reset_index(drop=True) if "split" in frame else frame
                name = spec.name + (f"/d{d}" if len(spec.demo_seeds) > 1 else "")
                out.append(Configuration(name, frame, teacher=t.name, instruction=instruction, k_shot=spec.k_shot,
                                         demo_seed=d, meta={"uri": spec.to_dict()["uri"]}))
    return out


def study_multiverse(config: StudyConfig, prepared: dict, records: dict, *, draws: int | None = None) -> list[dict]:
    """Every ``[[hypotheses]]`` entry on every dataset: decided by each configuration, against the classical
    decision on all the training items' gold labels. ``draws`` overrides each hypothesis's number of gold draws."""
    out = []
    for name, prep in prepared.items():
        names = list(prep.dataset.label_names)
        for h in config.hypotheses:
            where = f"[[hypotheses]] '{h.name}' on {name}"
            confs = configurations_of(config, records, name, h.teachers)
            if not confs:
                log.warning("%s: no teacher configuration labelled it; skipped", where)
                continue
            first = confs[0].annotations
            shared = set(first["item"].astype(str))
            for c in confs:  # gold is drawn from items every configuration labelled and showed no one as a demo
                pop, _ = population(c.annotations, names)
                shared &= set(pop["item"].astype(str))
            items = [it for it in first["item"].astype(str) if it in shared]
            gold = pd.Series(first["gold"].to_numpy(), index=first["item"].astype(str).to_numpy(), dtype=object)
            covariates = text_covariates(first["item"], first["text"], h.text_covariates()) \
                if h.text_covariates() else None
            try:
                samples = uniform_draws(items, gold, h.gold_size, draws or h.draws, h.seed)
                with progress_bar(f"hypothesis {h.name} on {name}", total=1) as advance:
                    result = evaluate_hypothesis(h, confs, names, samples, all_gold=gold.loc[items], covariates=covariates,
                                      where=where)
                    advance(1)
            except SilverlabelError as exc:
                raise SilverlabelError(f"{where}: {exc}") from None
            out.append({"dataset": name, **result})
    return out


def check_hypotheses(config: StudyConfig, prepared: dict) -> None:
    """Before any labelling: each hypothesis's classes exist in every dataset (one line naming the entry)."""
    for name, prep in prepared.items():
        for h in config.hypotheses:
            try:
                h.estimand_object().check(list(prep.dataset.label_names))
            except SilverlabelError as exc:
                raise SilverlabelError(f"[[hypotheses]] '{h.name}' on dataset {name}: {exc}") from None
