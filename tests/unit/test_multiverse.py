"""The multiverse's error accounting on a synthetic family of teachers whose biases are built in, so every
teacher-as-truth decision is known in closed form, and PPI++'s decisions are checked against the nominal rate.

The population (N = 2000) is built exactly: a 0/1 covariate ``g`` splits it in halves, and in each half exactly
30 % of the items are ``pos`` (so the true difference by ``g`` is exactly 0); a second covariate ``h`` has 45 % pos
where it is 1 and 15 % where it is 0 (a true difference of 0.30). Each teacher flips an exact share of chosen
cells, so its shares, and its teacher-as-truth z statistic, follow by arithmetic:

- ``faithful`` flips 10 % of every (g, h, class) cell: the g-difference stays 0;
(every flip is spread evenly over the (g, h) cells)
- ``shifts`` turns 20 % of the negatives with g = 1 into pos: the g-difference becomes 0.7 x 0.2 = +0.14;
- ``reverses`` does the same where g = 0: -0.14;
- ``undercounts`` turns half the positives negative everywhere: the prevalence falls to 0.15.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from silverlabel.config import HypothesisSpec
from silverlabel.errors import SilverlabelError
from silverlabel.multiverse import Configuration, decide, error_kind, uniform_draws
from silverlabel.multiverse import evaluate_hypothesis as evaluate

N = 2000
NAMES = ["neg", "pos"]
LEVEL = 0.9


def population():
    """Items i0..i1999: g = first half 1, h alternates; gold pos exactly 30 % of each g half with the h split
    45 % / 15 % inside it (both are exact on 1000 items of 500 per h)."""
    g = np.repeat([1, 0], N // 2)
    h = np.tile([1, 0], N // 2)
    gold = np.zeros(N, dtype=int)
    for gv in (0, 1):
        for hv, share in ((1, 0.45), (0, 0.15)):
            cell = np.flatnonzero((g == gv) & (h == hv))
            gold[cell[: round(share * len(cell))]] = 1
    return g, h, gold


def flip(labels, mask, share, g, h):
    """Flip exactly ``share`` of the items in ``mask`` within each (g, h) cell (the first ones, deterministic), so
    a flip changes no share it is not meant to."""
    out = labels.copy()
    for gv in (0, 1):
        for hv in (0, 1):
            idx = np.flatnonzero(mask & (g == gv) & (h == hv))
            out[idx[: round(share * len(idx))]] ^= 1
    return out


def teachers(g, h, gold):
    faithful = flip(flip(gold, gold == 0, 0.1, g, h), gold == 1, 0.1, g, h)
    return {"faithful": faithful,
            "shifts": flip(gold, (g == 1) & (gold == 0), 0.2, g, h),
            "reverses": flip(gold, (g == 0) & (gold == 0), 0.2, g, h),
            "undercounts": flip(gold, gold == 1, 0.5, g, h)}


def frame(labels, seed):
    """Annotations with a P_S that is informative but noisy (0.75 / 0.25 around the teacher's label)."""
    rng = np.random.default_rng(seed)
    p = np.clip(np.where(labels == 1, 0.75, 0.25) + rng.normal(0, 0.1, len(labels)), 0.01, 0.99)
    return pd.DataFrame({"item": [f"i{i}" for i in range(len(labels))], "label": np.array(NAMES)[labels],
                         "p:neg": 1 - p, "p:pos": p})


def z_difference(labels, group):
    """Teacher-as-truth z of a difference of shares: (p1 - p0) / sqrt(p1 q1 / n1 + p0 q0 / n0) (the HC0 sandwich
    of OLS on [1, group], what ppi_py's classical_ols_ci computes up to its small-sample factor)."""
    a, b = labels[group == 1], labels[group == 0]
    p1, p0 = a.mean(), b.mean()
    se = math.sqrt(p1 * (1 - p1) / len(a) + p0 * (1 - p0) / len(b))
    return (p1 - p0) / se if se > 0 else 0.0


def z_share(labels, null):
    p = labels.mean()
    return (p - null) / math.sqrt(p * (1 - p) / len(labels))


def expected(z):
    crit = norm.ppf(1 - (1 - LEVEL) / 2)
    return "+" if z > crit else "-" if z < -crit else "0"


HYPOTHESES = [
    HypothesisSpec(name="g-difference", estimand="difference", target_class="pos", covariate="g", level=LEVEL),
    HypothesisSpec(name="above-quarter", estimand="prevalence", target_class="pos", threshold=0.25, level=LEVEL),
    HypothesisSpec(name="h-difference", estimand="difference", target_class="pos", covariate="h", level=LEVEL),
]


@pytest.fixture(scope="module")
def world():
    g, h, gold = population()
    labels = teachers(g, h, gold)
    confs = [Configuration(name, frame(lab, k), teacher=name) for k, (name, lab) in enumerate(labels.items())]
    items = [f"i{i}" for i in range(N)]
    cov = pd.DataFrame({"g": g, "h": h}, index=items)
    gold_s = pd.Series(np.array(NAMES)[gold], index=items, dtype=object)
    draws = uniform_draws(items, gold_s, 200, 100, seed=3)
    results = {hyp.name: evaluate(hyp, confs, NAMES, draws, all_gold=gold_s, covariates=cov) for hyp in HYPOTHESES}
    return g, h, gold, labels, results


def test_the_construction_is_what_the_docstring_says(world):
    g, h, gold, labels, _ = world
    assert gold[g == 1].mean() == gold[g == 0].mean() == 0.3
    assert gold[h == 1].mean() == pytest.approx(0.45) and gold[h == 0].mean() == pytest.approx(0.15)
    assert labels["shifts"][g == 1].mean() - labels["shifts"][g == 0].mean() == pytest.approx(0.14)
    assert labels["undercounts"].mean() == pytest.approx(0.15)


def test_reference_decisions_are_the_closed_form(world):
    g, h, gold, _, results = world
    assert results["g-difference"]["reference"]["decision"] == "0"
    assert results["g-difference"]["reference"]["estimate"] == pytest.approx(0.0, abs=1e-12)
    assert results["above-quarter"]["reference"]["decision"] == expected(z_share(gold, 0.25)) == "+"
    assert results["h-difference"]["reference"]["decision"] == expected(z_difference(gold, h)) == "+"
    assert results["h-difference"]["reference"]["estimate"] == pytest.approx(0.30)


def test_teacher_as_truth_decisions_and_error_shares_are_the_closed_form(world):
    g, h, gold, labels, results = world
    for hyp, z_of in (("g-difference", lambda lab: z_difference(lab, g)),
                      ("above-quarter", lambda lab: z_share(lab, 0.25)),
                      ("h-difference", lambda lab: z_difference(lab, h))):
        res = results[hyp]
        ref = res["reference"]["decision"]
        want = {name: expected(z_of(lab)) for name, lab in labels.items()}
        got = {r["name"]: r["teacher"]["decision"] for r in res["configurations"]}
        assert got == want, hyp
        kinds = [error_kind(d, ref) for d in want.values()]
        for k in ("type_I", "type_II", "type_S"):
            # every gold draw counts the teacher's one decision again, so the share is over configurations
            assert res["errors"]["teacher"][k] == pytest.approx(kinds.count(k) / len(kinds)), (hyp, k)
    # the biases built in: two teachers shift g's effect (Type I), one undercounts (Type S), none misses h
    assert results["g-difference"]["errors"]["teacher"]["type_I"] == 0.5
    assert results["above-quarter"]["errors"]["teacher"]["type_S"] == 0.25
    assert results["h-difference"]["errors"]["teacher"]["any"] == 0
    pushed = results["g-difference"]["range"]["teacher"]
    assert pushed["decisions"] == ["+", "-", "0"]  # a configuration for every conclusion
    assert pushed["low"] == pytest.approx(-0.14, abs=1e-9) and pushed["high"] == pytest.approx(0.14, abs=1e-9)


def test_ppi_decisions_match_the_reference_at_the_nominal_rate(world):
    *_, results = world
    # H0 true (g-difference): each configuration's PPI++ Type I share over 100 draws should be at most the nominal
    # 0.10; binomial sd sqrt(0.1 x 0.9 / 100) = 0.03, so 0.10 + 3 sd = 0.19 fails a wrong interval (teacher as
    # truth makes it 1.0 for two of them)
    for row in results["g-difference"]["configurations"]:
        assert row["ppi_teacher"]["type_I_share"] <= 0.19, row["name"]
        assert row["classical"]["type_I_share"] <= 0.19
    # a true 0.30 difference with 200 gold: power near 1, and a wrong sign needs a 10-sd miss
    for row in results["h-difference"]["configurations"]:
        assert row["ppi_teacher"]["type_II_share"] <= 0.05 and row["ppi_teacher"]["type_S_share"] == 0
    # 0.30 against 0.25 with 200 gold (z about 1.5): PPI++ often misses it (Type II) but never flips the sign,
    # while the undercounting teacher as truth flips it every time
    s = results["above-quarter"]["errors"]["ppi_teacher"]
    assert s["type_S"] == 0 and s["type_II"] > 0


def test_decisions_and_errors_by_definition():
    assert decide(0.1, 0.2, 0.0) == "+" and decide(-0.2, -0.1, 0.0) == "-" and decide(-0.1, 0.1, 0.0) == "0"
    assert decide(0.26, 0.3, 0.25) == "+"
    assert error_kind("+", "0") == "type_I" and error_kind("0", "-") == "type_II"
    assert error_kind("-", "+") == "type_S" and error_kind("+", "+") is None and error_kind("0", "0") is None


def test_bad_hypotheses_are_one_line_errors(world):
    g, h, gold, labels, _ = world
    confs = [Configuration("a", frame(labels["faithful"], 0)), Configuration("a", frame(labels["shifts"], 1))]
    items = [f"i{i}" for i in range(N)]
    gold_s = pd.Series(np.array(NAMES)[gold], index=items, dtype=object)
    draws = uniform_draws(items, gold_s, 50, 1, seed=0)
    cov = pd.DataFrame({"g": g}, index=items)
    with pytest.raises(SilverlabelError, match="two configurations are called 'a'"):
        evaluate(HYPOTHESES[0], confs, NAMES, draws, covariates=cov)
    with pytest.raises(SilverlabelError, match="target_class 'maybe' is not one of the labels"):
        evaluate(HypothesisSpec(name="x", estimand="prevalence", target_class="maybe", threshold=0.1), confs[:1],
                 NAMES, draws)
    with pytest.raises(SilverlabelError, match="no column 'q'"):
        evaluate(HypothesisSpec(name="x", estimand="difference", target_class="pos", covariate="q"), confs[:1],
                 NAMES, draws, covariates=cov)
    with pytest.raises(SilverlabelError, match="no item has g = 7"):
        evaluate(HypothesisSpec(name="x", estimand="difference", target_class="pos", covariate="g", groups=[7, 0]),
                 confs[:1], NAMES, draws, covariates=cov)
    with pytest.raises(SilverlabelError, match="gold_size 2000 is not below"):
        uniform_draws(items, gold_s, 2000, 1, seed=0)


def test_a_fit_with_no_estimate_decides_not_significant_and_is_counted():
    """A teacher that calls every item neg has no logistic estimate (the coefficients run off to infinity):
    its decision is "not significant", a Type II error against h's true effect, and counted as no_estimate."""
    g, h, gold = population()
    items = [f"i{i}" for i in range(N)]
    gold_s = pd.Series(np.array(NAMES)[gold], index=items, dtype=object)
    confs = [Configuration("all-neg", frame(np.zeros(N, dtype=int), 0)), Configuration("faithful", frame(gold, 1))]
    hyp = HypothesisSpec(name="h-logit", estimand="logistic", target_class="pos", covariates=["h"], level=LEVEL)
    res = evaluate(hyp, confs, NAMES, uniform_draws(items, gold_s, 200, 2, seed=1), all_gold=gold_s,
                   covariates=pd.DataFrame({"h": h}, index=items))
    assert res["reference"]["decision"] == "+"
    neg, faithful = res["configurations"]
    assert neg["teacher"]["estimate"] is None and neg["teacher"]["decision"] == "0"
    assert neg["teacher"]["error"] == "type_II" and faithful["teacher"]["error"] is None
    assert res["errors"]["teacher"]["no_estimate"] == 2  # its one decision, counted once per gold draw
    assert res["range"]["teacher"]["low"] == res["range"]["teacher"]["high"] == faithful["teacher"]["estimate"]
