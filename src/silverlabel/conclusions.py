"""The study's "What you can conclude" section: for each ``[[estimates]]`` entry and dataset, gold samples of each
size drawn by the entry's design from the teacher-labelled training items, every method's interval
(:func:`silverlabel.inference.estimate`) beside the truth from all those items' gold labels, and the power analysis
with the pilot being the largest gold sample.

Only the shipped data (or any data with gold for every item) can show the truth; with a user's own data the same
estimates come from ``silverlabel estimate`` on the gold labels people gave.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from .config import StudyConfig
from .estimands import gold_reference, text_covariates
from .inference import estimate
from .sampling import draw, inclusion_probabilities

log = logging.getLogger(__name__)


def truth(frame: pd.DataFrame, label_names, estimand, covariates: pd.DataFrame | None) -> dict:
    """The parameters computed from every item's gold label (what the intervals should cover)."""
    gold = pd.Series(frame["gold"].astype(str).to_numpy(), index=frame["item"].astype(str).to_numpy())
    _, intervals = gold_reference(estimand, label_names, gold, covariates, level=0.9)
    return {i.parameter: i.estimate for i in intervals}


def study_estimates(config: StudyConfig, prepared: dict, records: dict) -> list[dict]:
    """One entry per ([[estimates]] entry, dataset): the population, the truth, per gold size every method's
    interval, and the power analysis from the largest gold sample."""
    from .config import TrainConfig

    out = []
    for k, spec in enumerate(config.estimates):
        tname = spec.teacher or config.teachers[0].name
        teacher = config.teacher_specs()[tname]
        for name, prep in prepared.items():
            frames = records.get((name, tname), {})
            if not frames:
                log.warning("[[estimates]] %d: no labels of teacher %s for %s; skipped", k + 1, tname, name)
                continue
            frame = frames[teacher.demo_seeds[0]].reset_index(drop=True)
            label_names = list(prep.dataset.label_names)
            eligible = frame["label"].notna().to_numpy(copy=True)
            if "demo" in frame:
                eligible = eligible & ~frame["demo"].fillna(False).astype(bool).to_numpy()
            pop = frame[eligible].reset_index(drop=True)
            estimand = spec.estimand_object()
            names = spec.text_covariates()
            cov = text_covariates(pop["item"], pop["text"], names) if names else None
            entry = {"index": k, "dataset": name, "teacher": tname, "estimand": spec.estimand,
                     "question": estimand.to_dict(), "title": estimand.describe(), "design": spec.design,
                     "level": spec.level, "target_class": spec.target_class, "covariates": names,
                     "population": len(pop), "excluded": int((~eligible).sum()),
                     "truth": truth(pop, label_names, estimand, cov), "by_size": []}
            entropy = pop["entropy"].to_numpy(dtype=float)
            student_config = TrainConfig(model=config.students[0].model,
                                         learning_rate=config.students[0].learning_rate) if spec.student else None
            last = None
            for size in sorted(spec.gold_sizes):
                if size >= len(pop):
                    log.warning("[[estimates]] %d: gold size %d is not below the %d items of %s; skipped", k + 1,
                                size, len(pop), name)
                    continue
                p = inclusion_probabilities(entropy, size, design=spec.design, floor=spec.floor)
                sample = draw(p, seed=spec.seed * 7919 + size, name=spec.design)
                idx = np.flatnonzero(sample.chosen)
                gold = pd.Series(pop["gold"].iloc[idx].to_numpy(), index=pop["item"].iloc[idx].astype(str).to_numpy(),
                                 dtype=object)
                est = estimate(pop, label_names, gold, estimand, level=spec.level,
                               inclusion=pd.Series(p[idx], index=gold.index), covariates=cov,
                               student=spec.student, student_config=student_config, seed=spec.seed,
                               target_width=spec.target_width)
                entry["by_size"].append({"size": size, "n_gold": est.n_gold, "table": est.to_dict()["table"]})
                last = est
            if last is not None:
                entry["power"] = [vars(p) for p in last.power]
                entry["pilot"] = last.n_gold
            out.append(entry)
    return out


def width_curve(power: dict, sizes, *, level: float, population: int) -> dict[str, list[float]]:
    """Expected interval width against n gold labels from a pilot's sd and PPI correlation rho: classical
    2 z sd / sqrt(n); PPI++ at its optimal lam with N items, 2 z sd sqrt((1 - rho^2 N / (N + n)) / n) (the
    variance ppi_py's power analysis is built on; a negative rho gains nothing, lam is clipped at 0)."""
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - level) / 2))
    sd = power["sd"]
    out = {"classical": [2 * z * sd / math.sqrt(n) for n in sizes]}
    for key, rho in (("ppi_teacher", power.get("ppi_corr_teacher")), ("ppi_student", power.get("ppi_corr_student"))):
        if rho is None:
            continue
        r2 = max(rho, 0.0) ** 2
        out[key] = [2 * z * sd * math.sqrt((1 - r2 * population / (population + n)) / n) for n in sizes]
    return out

