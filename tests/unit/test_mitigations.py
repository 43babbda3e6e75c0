"""Mitigations at an equal gold budget, with known answers: a teacher whose errors we injected ourselves."""

import math

import numpy as np
import pandas as pd
import pytest

from silverlabel.errors import SilverlabelError
from silverlabel.metrics.divergence import calibration, confusion_flows, kl_estimate
from silverlabel.mitigations import POLICIES, GoldOracle, apply_policy, resolve_budget
from tests.synthetic_teacher import synthetic_teacher

N = 600


@pytest.fixture(scope="module")
def teacher():
    records, gold, names, flipped = synthetic_teacher(N, seed=0)
    rng = np.random.default_rng(1)
    fake = rng.normal(size=(N, 384))  # an embedding that says nothing: the error model must not drown in it
    fake /= np.linalg.norm(fake, axis=1, keepdims=True)
    return records, gold, names, flipped, fake


def _ensemble(records, names, *, runs=2, seed=0):
    """Other teacher runs: each item's label re-drawn from P_S, so uncertain items flip more often."""
    rng = np.random.default_rng(seed)
    p = records[[f"p:{n}" for n in names]].to_numpy()
    out = []
    for _ in range(runs):
        frame = records.copy()
        ok = ~np.isnan(p).any(axis=1)
        frame.loc[ok, "label"] = [names[rng.choice(len(names), p=row)] for row in p[ok]]
        out.append(frame.sample(frac=1, random_state=int(rng.integers(1000))))  # order must not matter
    return out


def _options(name, fake):
    return {"learned": {"embeddings": fake}, "confident": {}}.get(name, {})


# ------------------------------------------------------------------------------------------------- budget


@pytest.mark.parametrize("budget, n, expected", [
    (0.05, 600, 30), (0.0, 600, 0), (1.0, 600, 600), (0.025, 100, 3), ("5%", 600, 30), ("50", 600, 50),
    (50, 600, 50), ("0.1", 600, 60), (0, 10, 0), (700, 600, 600), ("12.5%", 8, 1),
])
def test_resolve_budget(budget, n, expected):
    assert resolve_budget(budget, n) == expected


@pytest.mark.parametrize("budget", [1.5, -0.1, -3, "120%", "-5%", "lots", True, None, float("nan")])
def test_bad_budget_is_a_clear_error(budget):
    with pytest.raises(SilverlabelError) as err:
        resolve_budget(budget, 100)
    assert str(budget) in str(err.value) and "'5%'" in str(err.value)


# ------------------------------------------------------------------------------------------------- oracle


def test_oracle_counts_and_refuses_to_overspend():
    oracle = GoldOracle(["a", "b", "a", "b"], budget=2)
    assert list(oracle.reveal([1, 1])) == ["b", "b"] and oracle.used == 1
    oracle.reveal([1, 3])
    assert oracle.used == 2 and oracle.left == 0
    with pytest.raises(SilverlabelError, match="budget is 2"):
        oracle.reveal([0])
    fresh = oracle.session(budget=1)
    assert fresh.used == 0 and list(fresh.reveal([2])) == ["a"]


def test_oracle_without_a_label_names_the_item():
    oracle = GoldOracle(["a", None], items=["x1", "x2"], source="people.csv")
    with pytest.raises(SilverlabelError, match="'x2' has no label in people.csv"):
        oracle.reveal([0, 1])


class SpyOracle(GoldOracle):
    """Records every index any session is asked for."""

    asked: set

    def session(self, *, budget):
        spy = SpyOracle(self._gold, budget=budget)
        spy.asked = self.asked
        return spy

    def reveal(self, indices):
        self.asked.update(int(i) for i in np.asarray(indices).reshape(-1))
        return super().reveal(indices)


# ---------------------------------------------------------------------------------------- every policy


@pytest.mark.parametrize("name, probs", [(n, "ps") for n in sorted(POLICIES)] + [("confident", "cv")])
def test_a_teacher_that_says_one_label_still_gets_its_budget_spent(teacher, name, probs):
    """The 0.5B teacher labels every Davidson tweet 'offensive language': no policy may crash on that."""
    records, gold, names, _, fake = teacher
    one = records.copy()
    one["label"] = names[0]
    options = {**_options(name, fake), **({"probs": probs} if name == "confident" else {})}
    r = apply_policy(name, one, label_names=names, budget=0.1, oracle=GoldOracle(gold), seed=1,
                     ensemble=_ensemble(records, names), options=options)
    assert r.accounting["gold_used"] == r.chosen.sum() == (60 if r.accounting["budget"] else 0)
    if name == "confident":  # ranked by the teacher's own confidence in that one label, lowest first
        p0 = one[f"p:{names[0]}"].to_numpy()
        picked = p0[r.chosen & ~np.isnan(p0)]  # items the teacher failed on come first, as in every policy
        assert picked.max() <= np.sort(p0[~np.isnan(p0)])[len(picked) - 1] + 1e-12


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("budget", [0, 0.05, 37, 0.3])
def test_every_policy_spends_exactly_the_budget(teacher, name, budget):
    records, gold, names, _, fake = teacher
    oracle = SpyOracle(gold)
    oracle.asked = set()
    r = apply_policy(name, records, label_names=names, budget=budget, oracle=oracle, seed=3,
                     ensemble=_ensemble(records, names), options=_options(name, fake))
    b = resolve_budget(budget, N)
    assert r.accounting["gold_used"] == b == r.chosen.sum() == len(oracle.asked)
    assert oracle.asked == set(np.flatnonzero(r.chosen))  # gold was seen for the chosen items only
    assert r.accounting["budget"] == b
    gold = np.array(gold, dtype=object)
    assert (r.labels[r.chosen] == gold[r.chosen]).all()
    teacher_labels = records["label"].to_numpy(dtype=object)
    same = ~r.chosen
    if name != "ensemble":  # (ensemble keeps the first run's labels unless vote=True)
        assert all(a == b_ for a, b_ in zip(r.labels[same], teacher_labels[same]))


def test_a_count_above_the_items_spends_every_item(teacher):
    records, gold, names, *_ = teacher
    r = apply_policy("entropy", records.head(20), label_names=names, budget=25, oracle=GoldOracle(gold[:20]))
    assert r.accounting["gold_used"] == 20 and r.accounting["noise_rate"] == 0


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_zero_budget_is_the_plain_teacher(teacher, name):
    records, gold, names, flipped, fake = teacher
    r = apply_policy(name, records, label_names=names, budget=0, oracle=GoldOracle(gold),
                     ensemble=_ensemble(records, names), options=_options(name, fake))
    plain = records["label"].to_numpy(dtype=object)
    assert all(a == b for a, b in zip(r.labels, plain)) and not r.chosen.any()
    assert r.accounting["gold_used"] == 0
    kept = np.array([v is not None for v in plain])
    assert r.accounting["noise_rate"] == pytest.approx(flipped[kept].mean())
    if name == "soft":
        p = records[[f"p:{n}" for n in names]].to_numpy()
        np.testing.assert_allclose(r.soft, p)


def test_drop_removes_the_chosen_items_instead(teacher):
    records, gold, names, flipped, _ = teacher
    rep = apply_policy("entropy", records, label_names=names, budget=0.2, oracle=GoldOracle(gold))
    drop = apply_policy("entropy", records, label_names=names, budget=0.2, oracle=GoldOracle(gold), action="drop")
    assert (drop.chosen == rep.chosen).all()
    assert all(v is None for v in drop.labels[drop.chosen])
    assert drop.kept.sum() == N - drop.chosen.sum()  # the failed items were chosen first, so none is left over
    assert drop.accounting["gold_used"] == rep.accounting["gold_used"]
    assert drop.accounting["noise_rate"] == pytest.approx(flipped[~drop.chosen].mean())
    assert rep.accounting["noise_rate"] == pytest.approx(flipped[~rep.chosen].sum() / N)
    with pytest.raises(SilverlabelError, match="action 'delete'"):
        apply_policy("entropy", records, label_names=names, budget=0.2, oracle=GoldOracle(gold), action="delete")


def test_failed_teacher_calls_get_gold_first(teacher):
    records, gold, names, *_ = teacher
    failed = records["label"].isna().to_numpy()
    for name in ("random", "entropy", "confident"):
        r = apply_policy(name, records, label_names=names, budget=failed.sum() + 1, oracle=GoldOracle(gold))
        assert r.chosen[failed].all()
    r = apply_policy("random", records, label_names=names, budget=2, oracle=GoldOracle(gold))
    assert sum(v is None for v in r.labels) == failed.sum() - 2  # failed items left without gold are dropped


def test_accounting_by_hand():
    names = ["x", "y"]
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8], [0.5, 0.5], [0.1, 0.9]])
    records = pd.DataFrame({"item": list("abcdef"), "text": list("abcdef"), "label": ["x", "x", "x", "y", "x", "y"],
                            "entropy": 0.0, "p:x": p[:, 0], "p:y": p[:, 1], "prompt_tokens": 10, "error": None})
    gold = ["x", "y", "y", "y", "x", "x"]  # the teacher is wrong on b, c and f
    r = apply_policy("entropy", records, label_names=names, budget=2, oracle=GoldOracle(gold))
    # highest entropy: e (0.5/0.5), then c (0.55/0.45): one of the two is a teacher error
    assert list(np.flatnonzero(r.chosen)) == [2, 4]
    a = r.accounting
    assert a["errors_caught_precision"] == 0.5 and a["errors_caught_recall"] == pytest.approx(1 / 3)
    assert a["noise_rate"] == pytest.approx(2 / 6)  # b and f remain wrong
    assert a["teacher_calls"] == 6 and a["teacher_tokens"] == 60 and a["teacher_errors"] == 3
    assert list(r.labels) == ["x", "x", "y", "y", "x", "y"]


# -------------------------------------------------------------------------------------- known answers


def test_confident_and_learned_find_the_injected_errors(teacher):
    records, gold, names, flipped, fake = teacher
    oracle = GoldOracle(gold)
    rand = [apply_policy("random", records, label_names=names, budget=0.2, oracle=oracle, seed=s).accounting
            for s in range(3)]
    rand_p = np.mean([a["errors_caught_precision"] for a in rand])
    rand_r = np.mean([a["errors_caught_recall"] for a in rand])
    assert rand_p == pytest.approx(flipped.mean(), abs=0.08)  # random catches errors at the base rate
    for name in ("confident", "learned"):
        a = apply_policy(name, records, label_names=names, budget=0.2, oracle=oracle,
                         options=_options(name, fake)).accounting
        assert a["errors_caught_precision"] > rand_p + 0.2, (name, a)
        assert a["errors_caught_recall"] > rand_r + 0.2, (name, a)
        most = apply_policy(name, records, label_names=names, budget=0.3, oracle=oracle,
                            options=_options(name, fake)).accounting
        assert most["errors_caught_recall"] > 0.7, (name, most)
        assert most["noise_rate"] < 0.5 * flipped.mean()


def test_confident_with_cross_validated_probabilities_beats_random(teacher):
    """Informative embeddings (the gold class plus noise) let a cheap model find labels that disagree with
    the text, which is what confident learning is for."""
    records, gold, names, flipped, fake = teacher
    index = {n: i for i, n in enumerate(names)}
    emb = fake + 0.8 * np.eye(len(names), 384)[[index[g] for g in gold]]
    oracle = GoldOracle(gold)
    a = apply_policy("confident", records, label_names=names, budget=0.1, oracle=oracle,
                     options={"probs": "cv", "embeddings": emb}).accounting
    assert a["flagged_items"] > 0 and a["errors_caught_precision"] > flipped.mean() + 0.3


def test_learned_spends_part_of_the_budget_on_validation(teacher):
    records, gold, names, _, fake = teacher
    r = apply_policy("learned", records, label_names=names, budget=100, oracle=GoldOracle(gold),
                     options={"embeddings": fake, "validation": 40, "model": "ridge"})
    assert r.accounting["validation_items"] == 40 and r.accounting["gold_used"] == 100
    tiny = apply_policy("learned", records, label_names=names, budget=8, oracle=GoldOracle(gold),
                        options={"embeddings": fake, "validation": 1.0})
    assert tiny.accounting["gold_used"] == 8 and tiny.accounting["error_model"] == "entropy (fallback)"


def test_ensemble_by_hand():
    names = ["x", "y"]

    def run(labels, seed_tokens=5):
        p = np.array([[0.8, 0.2] if v == "x" else [0.3, 0.7] for v in labels])
        return pd.DataFrame({"item": list("abcd"), "text": list("abcd"), "label": labels, "entropy": 0.5,
                             "p:x": p[:, 0], "p:y": p[:, 1], "prompt_tokens": seed_tokens, "error": None})

    first = run(["x", "x", "y", "y"])
    others = [run(["x", "y", "y", "x"], 7), run(["x", "y", "x", "y"], 7), run(["x", "y", "y", "y"], 7)]
    # flip rates: a 0, b c d 1/4 each (three of four runs agree); their mean distributions are alike, so the
    # tie falls back to position: b and c get the budget of 2
    gold = ["x", "y", "y", "y"]
    r = apply_policy("ensemble", first, label_names=names, budget=2, oracle=GoldOracle(gold), ensemble=others)
    assert list(np.flatnonzero(r.chosen)) == [1, 2]
    assert r.accounting["teacher_calls"] == 16 and r.accounting["extra_teacher_calls"] == 12
    assert r.accounting["teacher_tokens"] == 4 * 5 + 12 * 7 and r.accounting["flipped_items"] == 3
    vote = apply_policy("ensemble", first, label_names=names, budget=0, oracle=GoldOracle(gold), ensemble=others,
                        options={"vote": True})
    assert list(vote.labels) == ["x", "y", "y", "y"] and vote.accounting["noise_rate"] == 0
    with pytest.raises(SilverlabelError, match="needs the other teacher runs"):
        apply_policy("ensemble", first, label_names=names, budget=1, oracle=GoldOracle(gold))
    with pytest.raises(SilverlabelError, match="item 'd'"):
        apply_policy("ensemble", first, label_names=names, budget=1, oracle=GoldOracle(gold),
                     ensemble=[others[0].head(3)])


def test_soft_gets_one_hot_gold_where_it_spent(teacher):
    records, gold, names, *_ = teacher
    r = apply_policy("soft", records, label_names=names, budget=0.1, oracle=GoldOracle(gold))
    rows = r.soft[r.chosen]
    assert ((rows == 0) | (rows == 1)).all() and (rows.sum(axis=1) == 1).all()
    assert [names[i] for i in rows.argmax(axis=1)] == list(np.array(gold, dtype=object)[r.chosen])
    kept = r.kept & ~r.chosen
    np.testing.assert_allclose(r.soft[kept], records.loc[kept, [f"p:{n}" for n in names]].to_numpy())


def test_unknown_policy_and_option_are_errors(teacher):
    records, gold, names, *_ = teacher
    with pytest.raises(SilverlabelError, match="unknown policy 'oracle'.*random"):
        apply_policy("oracle", records, label_names=names, budget=1, oracle=GoldOracle(gold))
    with pytest.raises(SilverlabelError, match="no option 'alpha'.*validation"):
        apply_policy("learned", records, label_names=names, budget=1, oracle=GoldOracle(gold),
                     options={"alpha": 1})


# ---------------------------------------------------------------------------------- divergence, by hand


def test_kl_estimate_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.25, 0.25], [0.05, 0.05, 0.9], [0.6, 0.3, 0.1]])
    gold = np.array([0, 1, 2, 2, 1])
    by_hand = -(math.log(0.7) + math.log(0.8) + math.log(0.25) + math.log(0.9) + math.log(0.3)) / 5
    est = kl_estimate(probs, gold, n_boot=2000, seed=1)
    assert est.value == pytest.approx(by_hand) and est.n == 5
    assert est.ci_low <= by_hand <= est.ci_high and est.ci_low < est.ci_high
    losses = -np.log([0.7, 0.8, 0.25, 0.9, 0.3])
    assert est.se == pytest.approx(losses.std(ddof=0) / math.sqrt(5), rel=0.15)  # the bootstrap SE of a mean
    assert est.gold_needed(0.05) == math.ceil(5 * (1.96 * est.se / 0.05) ** 2)
    assert est.gold_needed(0.025) > 3.9 * est.gold_needed(0.05)  # halving the width costs four times the gold
    zero = kl_estimate(np.eye(3), np.arange(3), n_boot=50)
    assert zero.value == 0 and zero.ci_high == 0
    assert kl_estimate(np.array([[1.0, 0.0]]), np.array([1]), n_boot=10).value == pytest.approx(-math.log(1e-12))


def test_kl_interval_shrinks_with_more_gold(teacher):
    records, gold, names, *_ = teacher
    ok = records["label"].notna().to_numpy()
    p = records.loc[ok, [f"p:{n}" for n in names]].to_numpy()
    g = np.array([names.index(x) for x, k in zip(gold, ok) if k])
    small, large = kl_estimate(p[:100], g[:100]), kl_estimate(p, g)
    assert large.ci_high - large.ci_low < small.ci_high - small.ci_low
    assert large.ci_low <= large.value <= large.ci_high
    with pytest.raises(SilverlabelError, match="NaN"):
        kl_estimate(records[[f"p:{n}" for n in names]].to_numpy(), np.zeros(N, dtype=int))


def test_calibration_by_hand():
    probs = np.array([[0.95, 0.05], [0.92, 0.08], [0.35, 0.65], [0.4, 0.6], [0.15, 0.85], [0.25, 0.75]])
    gold = np.array([0, 1, 1, 0, 1, 1])
    cal = calibration(probs, gold, n_bins=5)
    # bins (0.6,0.8]: conf .65 .75 (both right) -> acc 1, conf .70; (0.4..0.6]: .6 (wrong) -> acc 0, conf .6;
    # (0.8,1]: .95 .92 .85 -> one wrong of three, conf .9067
    by_hand = (2 * abs(1 - 0.70) + 1 * abs(0 - 0.6) + 3 * abs(2 / 3 - (0.95 + 0.92 + 0.85) / 3)) / 6
    assert cal.ece == pytest.approx(by_hand)
    assert cal.bins["count"].tolist() == [0, 0, 1, 2, 3]
    assert cal.bins.loc[4, "accuracy"] == pytest.approx(2 / 3) and math.isnan(cal.bins.loc[0, "accuracy"])
    perfect = calibration(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]))
    assert perfect.ece == 0


def test_confusion_flows_by_hand():
    gold = ["a", "a", "a", "b", "b", "c", "c", "c"]
    teacher = ["a", "b", "b", "b", None, "a", "c", "b"]
    f = confusion_flows(gold, teacher, ["a", "b", "c"])
    assert f.matrix.loc["a", "b"] == 2 and f.matrix.loc["b", "(no label)"] == 1 and int(f.matrix.values.sum()) == 8
    row = f.per_class.set_index("label").loc["a"]
    assert row["errors"] == 2 and row["error_rate"] == pytest.approx(2 / 3) and row["most_confused_with"] == "b"
    assert f.flows.iloc[0].tolist() == ["a", "b", 2] and len(f.flows) == 4
    with pytest.raises(SilverlabelError, match="'z'"):
        confusion_flows(["z"], ["a"], ["a", "b"])


def test_reliability_diagram_is_a_png(tmp_path):
    from silverlabel.reporting.teacher_plots import reliability_diagram

    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], 200)
    png = reliability_diagram(calibration(p, rng.integers(0, 3, 200)), path=tmp_path / "r.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "r.png").read_bytes() == png and len(png) > 5000
