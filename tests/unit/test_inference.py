"""Estimates and intervals of `silverlabel.inference` against ppi_py's own functions and closed forms, with a
synthetic teacher of known bias, the sampling designs, the power analysis and the cross-fitting."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import ppi_py
import pytest
from scipy.stats import binom, chi2, norm

from silverlabel.errors import SilverlabelError
from silverlabel.estimands import OLS, Logistic, Prevalence, Sample, fit_intervals, power
from silverlabel.inference import cross_fit_student, estimate, planning_gold, prevalence_intervals
from silverlabel.sampling import draw, inclusion_probabilities

NAMES = ["neg", "pos"]
Z90 = norm.ppf(0.95)


def biased_teacher(N=3000, prevalence=0.3, seed=0):
    """Gold labels with a known prevalence and a teacher that over-calls 'pos': P(pos | neg) = 0.25, so the
    teacher's prevalence is about 0.3 * 0.9 + 0.7 * 0.25 = 0.445, far from 0.3; P_S is informative (correlated
    with gold) but biased the same way."""
    rng = np.random.default_rng(seed)
    gold = (rng.random(N) < prevalence).astype(int)
    says_pos = np.where(gold == 1, rng.random(N) < 0.9, rng.random(N) < 0.25)
    p_pos = np.clip(np.where(says_pos, 0.75, 0.2) + rng.normal(0, 0.08, N), 0.01, 0.99)
    x = rng.normal(size=N) + gold  # a covariate that predicts the class
    ann = pd.DataFrame({"item": [f"i{i}" for i in range(N)], "label": np.where(says_pos, "pos", "neg"),
                        "p:neg": 1 - p_pos, "p:pos": p_pos, "text": "t"})
    return ann, gold, x


def test_teacher_as_truth_misses_and_ppi_covers_a_known_bias():
    ann, gold, _ = biased_teacher()
    truth = gold.mean()
    misses_teacher = covered_ppi = covered_classical = 0
    z2 = {"ppi_teacher": [], "classical": []}
    draws = 60
    for r in range(draws):
        idx = np.random.default_rng(100 + r).choice(len(gold), 150, replace=False)
        g = pd.Series(np.array(NAMES)[gold[idx]], index=ann["item"].iloc[idx].to_numpy())
        est = estimate(ann, NAMES, g)
        t, c, p = (est.get(m, "pos") for m in ("teacher", "classical", "ppi_teacher"))
        misses_teacher += not (t.lower <= truth <= t.upper)
        covered_ppi += p.lower <= truth <= p.upper
        covered_classical += c.lower <= truth <= c.upper
        assert p.width < c.width  # an informative surrogate narrows the interval
        for method, i in (("ppi_teacher", p), ("classical", c)):
            # the standardised error: (centre - truth) / se, with se = half-width / z
            z2[method].append(((i.lower + i.upper) / 2 - truth) ** 2 / ((i.upper - i.lower) / 2 / Z90) ** 2)
    assert misses_teacher == draws  # the teacher's bias (0.445 vs 0.3) is far outside its narrow interval
    # Coverage, two-sided: nominal 90 % over 60 draws is Binomial(60, 0.9); its central 99.9 % range is
    # [binom.ppf(0.0005), binom.ppf(0.9995)] = [45, 60] hits, so only under-coverage is detectable by the count.
    lo, hi = binom.ppf(0.0005, draws, 0.9), binom.ppf(0.9995, draws, 0.9)
    assert lo <= covered_ppi <= hi and lo <= covered_classical <= hi
    # Calibration, which also catches intervals that are too wide (the count above cannot): if the intervals are
    # right, z is ~N(0, 1) and the sum of z^2 over the draws is chi2(60); its central 99.9 % range is
    # [30.3, 102.7], i.e. mean z^2 in [0.51, 1.71]. Measured (PPI / classical): 1.06 / 1.22; with the half-widths
    # scaled by 1.5 (too wide) 0.47 / 0.54, by 1/1.5 (too narrow) 2.39 / 2.75: the PPI check fails either way.
    zlo, zhi = chi2.ppf(0.0005, draws) / draws, chi2.ppf(0.9995, draws) / draws
    for method, values in z2.items():
        assert zlo <= np.mean(values) <= zhi, (method, np.mean(values), zlo, zhi)


def test_prevalence_intervals_are_ppi_py_and_the_closed_form():
    ann, gold, _ = biased_teacher(N=1000, seed=1)
    idx = np.random.default_rng(0).choice(1000, 120, replace=False)
    probs = ann[["p:neg", "p:pos"]].to_numpy()
    teacher = (ann["label"] == "pos").to_numpy().astype(int)
    out = {(i.method, i.parameter): i for i in prevalence_intervals(gold[idx], idx, probs, teacher, NAMES)}
    y = (gold[idx] == 1).astype(float)
    # classical: p +- z sqrt(p(1-p)/n), written out
    p = y.mean()
    half = Z90 * math.sqrt(p * (1 - p) / len(y))
    assert out["classical", "pos"].lower == pytest.approx(p - half)
    assert out["classical", "pos"].upper == pytest.approx(p + half)
    # teacher as truth: the same formula over all N teacher labels
    q = teacher.mean()
    assert out["teacher", "pos"].upper == pytest.approx(q + Z90 * math.sqrt(q * (1 - q) / len(teacher)))
    # PPI++: ppi_py's own interval with lam tuned
    lo, hi = ppi_py.ppi_mean_ci(y, probs[idx, 1], probs[:, 1], alpha=0.1)
    assert (out["ppi_teacher", "pos"].lower, out["ppi_teacher", "pos"].upper) == pytest.approx((lo[0], hi[0]))
    # and the point estimate is ppi_py's point estimate
    assert out["ppi_teacher", "pos"].estimate == pytest.approx(
        float(np.ravel(ppi_py.ppi_mean_pointestimate(y, probs[idx, 1], probs[:, 1]))[0]))


def test_weights_are_inverse_inclusion_probabilities():
    ann, gold, _ = biased_teacher(N=1000, seed=2)
    ent = np.full(1000, 0.5)
    ent[:300] = 2.0
    pi = inclusion_probabilities(ent, 150, design="active", floor=0.2)
    sample = draw(pi, seed=3)
    idx = np.flatnonzero(sample.chosen)
    g = pd.Series(np.array(NAMES)[gold[idx]], index=ann["item"].iloc[idx].to_numpy())
    est = estimate(ann, NAMES, g, inclusion=pd.Series(pi[idx], index=g.index))
    assert est.design == "weighted"
    y = (gold[idx] == 1).astype(float)
    f = ann["p:pos"].to_numpy()
    lo, hi = ppi_py.ppi_mean_ci(y, f[idx], f, alpha=0.1, w=1 / pi[idx])
    got = est.get("ppi_teacher", "pos")
    assert (got.lower, got.upper) == pytest.approx((lo[0], hi[0]))
    lo, hi = ppi_py.classical_mean_ci(y, w=1 / pi[idx], alpha=0.1)
    got = est.get("classical", "pos")
    assert (got.lower, got.upper) == pytest.approx((lo, hi))


def test_designs_have_the_budget_and_known_probabilities():
    rng = np.random.default_rng(0)
    ent = rng.random(2000)
    eligible = np.ones(2000, bool)
    eligible[:3] = False  # demonstrations
    for design in ("uniform", "active"):
        pi = inclusion_probabilities(ent, 200, design=design, floor=0.1, eligible=eligible)
        assert pi.sum() == pytest.approx(200)
        assert (pi[:3] == 0).all() and (pi[3:] > 0).all() and (pi <= 1).all()
    pi = inclusion_probabilities(ent, 200, design="active", floor=0.1, eligible=eligible)
    # closed form: 200 * (0.9 H_i / sum H + 0.1 / N) over the eligible items
    h = np.where(eligible, ent, 0)
    assert pi[3:] == pytest.approx(200 * (0.9 * h[3:] / h.sum() + 0.1 / 1997))
    sizes = [draw(pi, seed=s).chosen.sum() for s in range(200)]
    assert abs(np.mean(sizes) - 200) < 3  # Poisson sampling: the expected size is the budget
    # a very uncertain item is capped at 1 and the rest still sum to the budget
    ent[10] = 1e6
    pi = inclusion_probabilities(ent, 200, design="active", floor=0.1)
    assert pi[10] == 1 and pi.sum() == pytest.approx(200)


def test_ols_and_logistic_match_ppi_py():
    # the intervals are compared with ppi_py's to 1e-6 at any size; 800 items keep ppi_py's logistic fit short
    ann, gold, x = biased_teacher(N=800, seed=4)
    idx = np.random.default_rng(1).choice(800, 160, replace=False)
    X = np.column_stack([np.ones(800), x])
    probs = ann[["p:neg", "p:pos"]].to_numpy()
    teacher = (ann["label"] == "pos").to_numpy().astype(int)
    y = (gold[idx] == 1).astype(float)
    cov = pd.DataFrame({"x": x}, index=ann["item"])

    def regression_intervals(kind):
        design = kind(target_class="pos", covariates=("x",)).design(NAMES, cov, ann["item"].tolist())
        return fit_intervals(design, Sample(idx, gold[idx]), teacher, {"ppi_teacher": probs}, level=0.9)

    for kind, classical, ppi in ((OLS, ppi_py.classical_ols_ci, ppi_py.ppi_ols_ci),
                                 (Logistic, ppi_py.classical_logistic_ci, ppi_py.ppi_logistic_ci)):
        out = {(i.method, i.parameter): i for i in regression_intervals(kind)}
        lo, hi = classical(X[idx], y, alpha=0.1)
        assert (out["classical", "x"].lower, out["classical", "x"].upper) == pytest.approx((lo[1], hi[1]))
        lo, hi = ppi(X[idx], y, probs[idx, 1], X, probs[:, 1], alpha=0.1)
        assert (out["ppi_teacher", "x"].lower, out["ppi_teacher", "x"].upper) == pytest.approx((lo[1], hi[1]))
    # OLS on the gold labels of all items (the truth of the regression) sits inside the PPI interval here
    import statsmodels.api as sm

    truth = sm.OLS(gold.astype(float), X).fit().params[1]
    out = {(i.method, i.parameter): i for i in regression_intervals(OLS)}
    assert out["ppi_teacher", "x"].lower <= truth <= out["ppi_teacher", "x"].upper


def test_power_is_the_closed_form_and_delivers_the_width():
    ann, gold, _ = biased_teacher(N=20000, seed=5)
    f = ann["p:pos"].to_numpy()
    idx = np.random.default_rng(2).choice(len(gold), 300, replace=False)
    y = (gold[idx] == 1).astype(float)
    h = 0.03
    design = Prevalence().design(NAMES, None, ann["item"].tolist())
    (power_neg, power_pos) = power(design, Sample(idx, gold[idx]), {"ppi_teacher": ann[["p:neg", "p:pos"]].to_numpy()},
                                   half_width=h, level=0.9)
    p = y.mean()
    assert power_pos.classical == math.ceil(Z90 ** 2 * p * (1 - p) / h ** 2)  # z^2 p(1-p) / h^2
    ref = ppi_py.ppi_mean_power(y, f[idx], cost_Y=1.0, cost_Yhat=1e-9, effective_n=power_pos.classical,
                                n_max=len(gold))
    assert power_pos.ppi_teacher == ref["n"] < power_pos.classical
    # the claim itself: samples of that many gold labels give PPI half-widths close to h
    halves = []
    for r in range(40):
        j = np.random.default_rng(50 + r).choice(len(gold), power_pos.ppi_teacher, replace=False)
        lo, hi = ppi_py.ppi_mean_ci((gold[j] == 1).astype(float), f[j], f, alpha=0.1)
        halves.append((hi[0] - lo[0]) / 2)
    assert np.mean(halves) == pytest.approx(h, rel=0.15)
    assert planning_gold(0.5, 0.05, 0.9) == math.ceil(Z90 ** 2 * 0.25 / 0.05 ** 2)


def test_cross_fitting_never_scores_a_gold_item_with_a_model_that_saw_it(monkeypatch):
    """A memorising stand-in for the student records what each fold trained on and answers 1.0 for the class of
    any text it saw, 0.5 otherwise: a leak would show as a gold item scored 1.0."""
    import silverlabel.students as students
    from silverlabel.students.hf import StudentRun

    seen_sets = []

    def fake(train_texts, targets, *, num_labels, config, seed, test_texts=(), **_):
        seen = dict(zip(train_texts, targets))
        seen_sets.append(set(train_texts))
        probs = np.full((len(test_texts), num_labels), 1 / num_labels)
        for i, t in enumerate(test_texts):
            if t in seen:
                probs[i] = np.eye(num_labels)[seen[t]]
        return StudentRun(seed=seed, preds=probs.argmax(1), probs=probs)

    monkeypatch.setitem(students.STUDENTS, "hf", fake)  # the registry is how cross-fitting finds the trainer
    texts = [f"text {i}" for i in range(100)]
    gold_index = np.arange(0, 100, 2)  # 50 gold items
    gold = np.arange(50) % 2
    out = cross_fit_student(texts, gold_index, gold, 2, folds=5, seed=0)
    assert len(seen_sets) == 5
    assert np.allclose(out[gold_index], 0.5)  # out-of-fold: never its own label
    others = np.setdiff1d(np.arange(100), gold_index)
    assert np.allclose(out[others], 0.5)  # average of the 5 students, none saw them
    assert all(len(s) == 40 for s in seen_sets)


def test_bad_inputs_are_one_line_errors():
    ann, gold, x = biased_teacher(N=200, seed=6)
    g = pd.Series(["pos", "neg", "pos"], index=["i0", "i1", "i2"])
    with pytest.raises(SilverlabelError, match="item 'i9' has gold label 'maybe'"):
        estimate(ann, NAMES, pd.Series(["maybe"], index=["i9"]))
    with pytest.raises(SilverlabelError, match="item 'nope' is not in"):
        estimate(ann, NAMES, pd.Series(["pos"], index=["nope"]))
    with pytest.raises(SilverlabelError, match="3 usable gold labels for 3 parameter"):
        estimate(ann, NAMES, g, OLS(target_class="pos", covariates=("x", "z")),
                 covariates=pd.DataFrame({"x": x, "z": x}, index=ann["item"]))
    with pytest.raises(SilverlabelError, match="target_class 'maybe' is not one of the labels"):
        estimate(ann, NAMES, g, Prevalence(target_class="maybe"))
    with pytest.raises(SilverlabelError, match="estimand 'median' is unknown"):
        estimate(ann, NAMES, g, "median")
    with pytest.raises(SilverlabelError, match="not in \\(0, 1\\]"):
        estimate(ann, NAMES, g, inclusion=pd.Series([0.1, 0.0, 0.2], index=g.index))


def test_study_section_estimates_against_the_truth_and_reports_it(tmp_path):
    """[[estimates]] through the study's hook and the report's section, on synthetic records with gold."""
    from types import SimpleNamespace

    from silverlabel.conclusions import study_estimates
    from silverlabel.config import StudyConfig
    from silverlabel.reporting.conclusions import (
        conclusion_sections,
        conclusions_markdown,
    )
    from tests.synthetic_teacher import synthetic_teacher

    records, gold, names, _ = synthetic_teacher(1200, seed=3)
    records = records.assign(gold=gold, demo=False)
    records.loc[7, "demo"] = True
    cfg = StudyConfig.from_dict({
        "datasets": [{"source": "toxic"}], "teachers": [{"name": "t", "uri": "llamacpp:qwen2.5-0.5b"}],
        "estimates": [{"gold_sizes": [100, 200], "design": "active"},
                      {"estimand": "ols", "covariates": ["chars"], "target_class": "neither", "gold_sizes": [150]}]})
    prepared = {"toxic": SimpleNamespace(dataset=SimpleNamespace(label_names=names))}
    out = study_estimates(cfg, prepared, {("toxic", "t"): {0: records}})
    prev, ols = out
    keep = records["label"].notna() & ~records["demo"]
    assert prev["population"] == keep.sum() and prev["excluded"] == (~keep).sum()
    assert prev["truth"] == pytest.approx({n: float((records.loc[keep, "gold"] == n).mean()) for n in names})
    assert [b["size"] for b in prev["by_size"]] == [100, 200] and len(prev["power"]) == 3
    import statsmodels.api as sm

    pop = records[keep]
    X = sm.add_constant(pop["text"].str.len().to_numpy(dtype=float))
    ref = sm.OLS((pop["gold"] == "neither").to_numpy(dtype=float), X).fit().params
    assert [ols["truth"]["intercept"], ols["truth"]["chars"]] == pytest.approx(list(ref))
    sections = conclusion_sections({"estimates": out}, tmp_path)
    md = "\n".join(conclusions_markdown(sections))
    assert "## What you can conclude" in md and "PPI++ (teacher P_S)" in md
    assert sections[0]["figure"].exists() and sections[0]["figure"].stat().st_size > 10_000
    with pytest.raises(SilverlabelError, match="estimand .logistic. needs target_class, covariates"):
        StudyConfig.from_dict({"datasets": [{"source": "toxic"}], "teachers": [{"name": "t", "uri": "llamacpp:x"}],
                               "estimates": [{"estimand": "logistic"}]})
    with pytest.raises(SilverlabelError, match="unknown key 'estimates.0.sizes'"):
        StudyConfig.from_dict({"datasets": [{"source": "toxic"}], "teachers": [{"name": "t", "uri": "llamacpp:x"}],
                               "estimates": [{"sizes": [10]}]})


def test_a_class_with_few_gold_labels_is_warned_about(caplog):
    """ppi_py's normal-approximation intervals undercover a class with few gold labels (bench/coverage.py); the
    user is told which class, and how many it has."""
    ann, gold, _ = biased_teacher(N=2000, prevalence=0.03, seed=3)
    idx = np.random.default_rng(0).choice(len(gold), 100, replace=False)
    k = int(gold[idx].sum())
    assert 0 < k < 10  # about 3 'pos' among 100
    g = pd.Series(np.array(NAMES)[gold[idx]], index=ann["item"].iloc[idx].to_numpy())
    with caplog.at_level("WARNING", logger="silverlabel.inference"):
        estimate(ann, NAMES, g)
    assert f"few gold labels of 'pos' ({k})" in caplog.text and "'neg'" not in caplog.text
    caplog.clear()
    idx = np.random.default_rng(0).choice(len(gold), 1000, replace=False)
    g = pd.Series(np.array(NAMES)[gold[idx]], index=ann["item"].iloc[idx].to_numpy())
    assert gold[idx].sum() >= 10
    with caplog.at_level("WARNING", logger="silverlabel.inference"):
        estimate(ann, NAMES, g)
    assert "few gold labels" not in caplog.text


def test_effective_n_is_the_gold_a_ppi_interval_is_worth_and_demonstrations_are_left_out():
    """README: "worth n gold = n x (classical width / PPI width)^2", computed here from ppi_py's own intervals;
    and items marked as prompt demonstrations leave the population and the gold sample (counted)."""
    ann, gold, _ = biased_teacher(N=1200, seed=9)
    ann["demo"] = False
    ann.loc[[0, 1, 2], "demo"] = True  # their teacher label saw their gold label
    idx = np.random.default_rng(3).choice(np.arange(3, 1200), 160, replace=False)
    labels = np.array(["neg", "pos"])
    gold_series = pd.Series(labels[gold[np.concatenate([[0, 1], idx])]],
                            index=[f"i{i}" for i in np.concatenate([[0, 1], idx])])
    est = estimate(ann, ["neg", "pos"], gold_series, level=0.9)
    assert est.excluded_demos == 3 and est.n_items == 1197 and est.n_gold == 160  # the 2 demo gold items dropped
    keep = ~ann["demo"].to_numpy()
    f = ann["p:pos"].to_numpy()[keep]
    pos = {it: k for k, it in enumerate(ann["item"][keep])}
    y = (gold[idx] == 1).astype(float)
    f_gold = f[[pos[f"i{i}"] for i in idx]]
    lo_p, hi_p = ppi_py.ppi_mean_ci(y, f_gold, f, alpha=0.1)
    lo_c, hi_c = ppi_py.classical_mean_ci(y, alpha=0.1)
    want = 160 * ((hi_c - lo_c) / (hi_p[0] - lo_p[0])) ** 2
    assert est.effective_n("ppi_teacher", "pos") == pytest.approx(want, rel=1e-6)
    row = est.table().query("parameter == 'pos' and method == 'ppi_teacher'").iloc[0]
    assert row["effective_n"] == pytest.approx(want, rel=1e-6) and want > 160  # an informative teacher helps
    assert est.table().query("method == 'classical'")["effective_n"].isna().all()


def test_a_second_process_reads_ppi_pys_compiled_kernels_from_numbas_cache(tmp_path):
    """ppi_py compiles its OLS statistics with numba in every process (5 s on one core); silverlabel turns on
    numba's on-disk cache. Two fresh processes share an empty NUMBA_CACHE_DIR: the first compiles and writes the
    kernel, the second reads it (numba's own hit and miss counters) and gives the same interval as ppi_py called
    here, in this process, without silverlabel in between."""
    script = (
        "import json, numpy as np, ppi_py\n"
        "from silverlabel.estimands.base import _ppi\n"
        "_ppi()\n"  # how silverlabel reaches ppi_py for every interval
        "rng = np.random.default_rng(0); X = np.column_stack([np.ones(200), rng.normal(size=200)])\n"
        "y = X[:, 1] + rng.normal(size=200)\n"
        "lo, hi = ppi_py.ppi_ols_ci(X[:40], y[:40], y[:40] + 0.3, X, y + 0.3, alpha=0.1)\n"
        "s = ppi_py.ppi._ols_get_stats.stats\n"
        "print(json.dumps({'hits': sum(s.cache_hits.values()), 'misses': sum(s.cache_misses.values()),"
        " 'ci': [lo.tolist(), hi.tolist()]}))\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                                      check=True, timeout=300).stdout) for _ in range(2)]
    assert runs[0]["misses"] >= 1 and runs[0]["hits"] == 0  # compiled, and written to the empty folder
    assert any(tmp_path.rglob("*ols_get_stats*.nbi"))
    assert runs[1]["misses"] == 0 and runs[1]["hits"] >= 1  # read back: no compilation
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(200), rng.normal(size=200)])
    y = X[:, 1] + rng.normal(size=200)
    lo, hi = ppi_py.ppi_ols_ci(X[:40], y[:40], y[:40] + 0.3, X, y + 0.3, alpha=0.1)
    for run in runs:
        assert np.allclose(run["ci"], [lo, hi], rtol=0, atol=1e-12)
