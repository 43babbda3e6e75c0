"""The divergence metrics, the plateau, the evaluation's JSON form, and the mitigation contract's helpers against
independent computations (scikit-learn, plain loops written here) and exact known values: the checks mutation
testing found missing (docs/testing.md)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

from silverlabel.errors import SilverlabelError
from silverlabel.metrics import detect_plateau, evaluate_table
from silverlabel.metrics.divergence import (
    EPS,
    FAILED,
    calibration,
    confusion_flows,
    kl_estimate,
)
from silverlabel.mitigations.base import (
    POLICIES,
    GoldOracle,
    register_policy,
    resolve_budget,
    top_k,
)

pytestmark = pytest.mark.filterwarnings("error")


def _probs(rng, n, k):
    p = rng.dirichlet(np.ones(k), n)
    return p, rng.integers(0, k, n)


# ------------------------------------------------------------------------------------------------ KL(P || P_S)
def test_kl_is_scikit_learns_log_loss_with_its_bootstrap_by_hand():
    rng = np.random.default_rng(3)
    p, g = _probs(rng, 40, 3)
    est = kl_estimate(p, g)  # the defaults: 1000 resamples, seed 0
    assert est.value == pytest.approx(log_loss(g, p, labels=[0, 1, 2]))
    loss = -np.log(p[np.arange(40), g])
    boot_rng = np.random.default_rng(0)
    boot = np.array([loss[boot_rng.integers(0, 40, 40)].mean() for _ in range(1000)])
    assert [est.ci_low, est.ci_high] == pytest.approx(list(np.percentile(boot, [2.5, 97.5])))
    assert est.se == pytest.approx(boot.std(ddof=1)) and est.n == 40
    assert est.to_dict() == {"value": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high, "se": est.se,
                             "n": 40}


def test_kl_clips_a_zero_probability_and_one_resample_has_no_error():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    est = kl_estimate(p, np.array([1, 0]), n_boot=1)
    assert est.value == pytest.approx((-math.log(EPS) + math.log(2)) / 2)
    assert math.isnan(est.se)
    certain = kl_estimate(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]), n_boot=20)
    assert certain.value == 0.0 and certain.se == 0.0


def test_gold_needed_by_hand():
    est = kl_estimate(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]), np.array([0, 1, 1, 0]),
                      n_boot=200, seed=1)
    assert est.gold_needed(0.05) == math.ceil(4 * (1.96 * est.se / 0.05) ** 2)
    flat = kl_estimate(np.array([[0.5, 0.5]] * 3), np.array([0, 1, 0]), n_boot=10)  # se 0
    assert flat.gold_needed(0.1) == 1
    with pytest.raises(SilverlabelError, match=r"^tolerance 0 must be positive \(nats\)$"):
        est.gold_needed(0)


@pytest.mark.parametrize("probs, gold, message", [
    (np.ones((3, 2)) / 2, np.array([0, 1]), r"^probs must be \(n, K\) and gold_index \(n,\); got \(3, 2\) and \(2,\)$"),
    (np.ones(3) / 3, np.array([0]), r"^probs must be \(n, K\)"),
    (np.ones((0, 2)), np.zeros(0, dtype=int), r"^no gold labels to measure the teacher against$"),
    (np.ones((2, 2)) / 2, np.array([0, 2]), r"^gold_index must be class indices in 0\.\.1$"),
    (np.ones((2, 2)) / 2, np.array([-1, 0]), r"^gold_index must be class indices in 0\.\.1$"),
    (np.array([[0.5, np.nan], [0.5, 0.5]]), np.array([0, 1]), r"^probs hold NaN rows"),
])
def test_bad_divergence_inputs(probs, gold, message):
    with pytest.raises(SilverlabelError, match=message):
        kl_estimate(probs, gold)
    with pytest.raises(SilverlabelError, match=message):
        calibration(probs, gold)


def test_probabilities_given_as_ints_or_lists_are_read_as_floats():
    est = kl_estimate([[1, 0], [0, 1]], [0, 1], n_boot=5)
    assert est.value == 0.0
    cal = calibration([[1, 0], [0, 1]], [0, 0])
    assert cal.ece == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------ calibration
def _reference_calibration(p, g, n_bins):
    """Bins (lower, upper] over the top probability, the first bin closed at 0, written as plain loops."""
    conf, correct = p.max(1), (p.argmax(1) == g)
    rows, ece = [], 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        sel = [i for i in range(len(p)) if (conf[i] > lo or b == 0) and (conf[i] <= hi or b == n_bins - 1)]
        c = float(np.mean(conf[sel])) if sel else float("nan")
        a = float(np.mean(correct[sel])) if sel else float("nan")
        if sel:
            ece += len(sel) / len(p) * abs(a - c)
        rows.append((lo, hi, c, a, len(sel)))
    return ece, rows


def test_calibration_matches_a_loop_including_confidences_on_the_bin_edges():
    rng = np.random.default_rng(7)
    p, g = _probs(rng, 60, 3)
    # confidences exactly on edges belong to the bin below: (0.4, 0.5] holds 0.5, (0.5, 0.6] holds 0.6
    p[:3] = [[0.5, 0.25, 0.25], [0.6, 0.2, 0.2], [0.7, 0.3, 0.0]]
    for n_bins in (10, 4, 1):
        got = calibration(p, g) if n_bins == 10 else calibration(p, g, n_bins=n_bins)
        ece, rows = _reference_calibration(p, g, n_bins)
        assert got.ece == pytest.approx(ece)
        assert list(got.bins.columns) == ["lower", "upper", "confidence", "accuracy", "count"]
        assert len(got.bins) == n_bins
        want = pd.DataFrame(rows, columns=got.bins.columns)
        pd.testing.assert_frame_equal(got.bins, want, check_dtype=False)
    with pytest.raises(SilverlabelError, match=r"^n_bins must be at least 1 \(got 0\)$"):
        calibration(p, g, n_bins=0)


# ------------------------------------------------------------------------------------------------ confusion flows
def test_confusion_flows_match_scikit_learn_and_sort_ties_by_name():
    labels = ["a", "b", "c", "d"]
    gold = ["a"] * 4 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2
    teacher = ["a", "b", "b", "c", "a", "c", "b", None, "c", "c", "c", "d", "d"]
    got = confusion_flows(gold, teacher, labels)
    cols = labels + [FAILED]
    filled = [FAILED if t is None else t for t in teacher]
    want = confusion_matrix(gold, filled, labels=cols)[:len(labels)]
    assert got.matrix.to_numpy().tolist() == want.tolist()
    assert list(got.matrix.index) == labels and list(got.matrix.columns) == cols
    assert got.matrix.index.name == "gold" and got.matrix.columns.name == "teacher"
    assert list(got.per_class.columns) == ["label", "support", "errors", "error_rate", "most_confused_with"]
    assert got.per_class["support"].tolist() == [4, 4, 3, 2] and got.per_class["errors"].tolist() == [3, 3, 0, 0]
    assert got.per_class["error_rate"].tolist() == pytest.approx([0.75, 0.75, 0.0, 0.0])
    worst = got.per_class["most_confused_with"]
    assert worst[:2].tolist() == ["b", "a"] and worst[2:].isna().all()  # b: the first of a tie; c, d: no errors
    # largest first; ties by gold, then by teacher label, ascending
    assert got.flows.values.tolist() == [["a", "b", 2], ["a", "c", 1], ["b", FAILED, 1], ["b", "a", 1],
                                         ["b", "c", 1]]  # "(no label)" sorts before letters
    assert list(got.flows.columns) == ["gold", "teacher", "count"]


def test_confusion_flows_without_failures_or_support():
    got = confusion_flows(["a", "a"], ["a", float("nan")], ["a", "b"])
    assert list(got.matrix.columns) == ["a", "b", FAILED]
    clean = confusion_flows(["a", "a"], ["a", "a"], ["a", "b"])
    assert list(clean.matrix.columns) == ["a", "b"] and clean.flows.empty
    assert math.isnan(clean.per_class["error_rate"][1]) and clean.per_class["support"][1] == 0


@pytest.mark.parametrize("gold, teacher, message", [
    (["a"], ["a", "b"], r"^1 gold labels but 2 teacher labels$"),
    (["z"], ["a"], r"^gold label 'z' is not one of \['a', 'b'\]$"),
    (["a"], ["y"], r"^teacher label 'y' is not one of \['a', 'b'\]$"),
    (["a"], [FAILED], None),  # the failed marker is the teacher's, not a label
    ([FAILED], ["a"], r"^gold label '\(no label\)' is not one of"),
])
def test_confusion_flows_input_errors(gold, teacher, message):
    if message is None:
        assert confusion_flows(gold, teacher, ["a", "b"]).matrix[FAILED].sum() == 1
        return
    with pytest.raises(SilverlabelError, match=message):
        confusion_flows(gold, teacher, ["a", "b"])


# ------------------------------------------------------------------------------------------------ plateau
def _reference_plateau(sizes, values, z=2.0, floor=0.005):
    """PLATEAU_METHOD written out again, one size at a time from the largest down."""
    pairs = sorted(zip(sizes, values))
    last = np.array(pairs[-1][1], dtype=float)

    def se2(v):
        return np.var(v, ddof=1) / len(v) if len(v) > 1 else 0.0

    plateau = None
    for size, v in reversed(pairs[:-1]):
        v = np.array(v, dtype=float)
        if abs(v.mean() - last.mean()) > z * max(math.sqrt(se2(v) + se2(last)), floor):
            break
        plateau = size
    return plateau


@pytest.mark.parametrize("sizes, values, expected", [
    ([10, 20], [[0.5], [0.5]], 10),  # one seed each: only the floor
    ([10, 20], [[0.5], [0.52]], None),  # 0.02 apart, more than 2 x the floor
    ([10, 20], [[0.5], [0.509]], 10),  # 0.009: within 2 x 0.005
    ([10, 20, 40], [[0.50, 0.52], [0.60, 0.62], [0.61, 0.59]], 20),  # se of each mean 0.01 -> bound 0.028
    ([40, 10, 20], [[0.61, 0.59], [0.50, 0.52], [0.60, 0.62]], 20),  # unsorted input
    ([10, 20, 40], [[0.5, 0.7], [0.6], [0.6, 0.6]], 10),  # wide seeds at 10
    ([10, 20, 40], [[0.5, 0.7], [], [0.6, 0.6]], None),  # a size with no finite value
    ([10, 20, 40], [[0.5, np.nan], [0.6, 0.6], [0.6, 0.6]], 20),  # NaN dropped: 0.5 alone is too far
    ([10], [[0.5, 0.6]], None),  # one size: nothing to compare
    # the standard error of a mean is s / sqrt(n): four seeds with s² = 1.3e-4 at 10 give a bound of 0.0115
    ([10, 20], [[0.50, 0.52, 0.50, 0.52], [0.55] * 4], None),
    ([10, 20], [[0.55] * 4, [0.50, 0.52, 0.50, 0.52]], None),  # the same spread on the largest size's side
    ([10, 20], [[0.5], [0.5, 0.54]], 10),  # two seeds at the largest size: se 0.02, bound 0.04 > 0.02 apart
])
def test_plateau_matches_the_method_written_out(sizes, values, expected):
    assert detect_plateau(sizes, values) == expected
    if all(len([x for x in v if np.isfinite(x)]) for v in values) and len(sizes) > 1:
        clean = [[x for x in v if np.isfinite(x)] for v in values]
        assert _reference_plateau(sizes, clean) == expected


def test_plateau_threshold_is_inclusive_and_z_counts():
    # exactly two floors apart is within (binary fractions, so the comparison is exact)
    assert detect_plateau([1, 2], [[0.0], [0.25]], floor=0.125) == 1
    assert detect_plateau([1, 2], [[0.0], [0.25]], floor=0.125, z=1.9) is None
    assert detect_plateau([1, 2], [[0.0], [0.375]], floor=0.125, z=3.0) == 1
    assert detect_plateau([1, 2], [[0.0], [0.375]], floor=0.125) is None


# ------------------------------------------------------------------------------------------------ the evaluation
def test_evaluation_to_dict_has_exactly_the_documented_fields():
    df = pd.DataFrame({"item": [1, 2, 1, 2], "run": [0, 0, 1, 1], "pred": ["x", "y", "x", "x"],
                       "gold": ["x", "y", "x", "y"]})
    out = evaluate_table(df).to_dict()
    assert list(out) == ["n_items", "n_runs", "accuracy_mean", "accuracy_std", "macro_f1_mean", "macro_f1_std",
                         "krippendorff_alpha", "p_unchanged", "pairwise_churn", "per_class", "accuracy_per_run",
                         "macro_f1_per_run"]
    assert (out["n_items"], out["n_runs"]) == (2, 2) and type(out["n_items"]) is int
    assert out["accuracy_per_run"] == {"0": 1.0, "1": 0.5}
    assert out["per_class"]["y"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 1, "p_unchanged": 0.0}
    assert out["p_unchanged"] == 0.5 and out["pairwise_churn"] == 0.5


# ------------------------------------------------------------------------------------------------ mitigation base
def test_register_policy_keeps_name_defaults_gold_flag_and_summary():
    name = "test-only-policy"

    def chooser(ctx):
        """Pick nothing.

        A second paragraph that is not the summary."""

    options = {"alpha": 1}
    try:
        assert register_policy(name, defaults=options, needs_gold=True)(chooser) is chooser
        spec = POLICIES[name]
        assert (spec.name, spec.fn, spec.defaults, spec.needs_gold, spec.summary) == (
            name, chooser, {"alpha": 1}, True, "Pick nothing.")
        options["alpha"] = 2
        assert spec.defaults == {"alpha": 1}  # a copy: the caller's dict can change later
        with pytest.raises(ValueError, match=rf"^policy '{name}' is registered twice$"):
            register_policy(name)(chooser)
        del POLICIES[name]
        register_policy(name)(lambda ctx: None)
        assert POLICIES[name].defaults == {} and POLICIES[name].needs_gold is False and POLICIES[name].summary == ""
    finally:
        POLICIES.pop(name, None)


@pytest.mark.parametrize("budget, n, expected", [
    (0.5, 3, 2), (0.5, 5, 3), (0.25, 2, 1), (0.1, 4, 0), ("0.5", 5, 3), ("50%", 3, 2), ("+2", 5, 2), ("2", 1, 1),
    (np.int64(3), 10, 3), (np.float32(0.5), 4, 2), (1.0, 7, 7), (0, 7, 0), ("0%", 9, 0),
])
def test_budgets_round_half_up_and_cap_counts(budget, n, expected):
    assert resolve_budget(budget, n) == expected


@pytest.mark.parametrize("budget, message", [
    (True, r"^budget True is not a budget; pass a share"),
    (None, r"^budget None is not a budget; pass a share"),
    ("lots", r"^budget 'lots' is not a number; pass a share"),
    ([1], r"^budget \[1\] is not a number; pass a share"),
    (-0.1, r"^budget -0\.1 is negative or not a number; pass a share"),
    (float("nan"), r"^budget nan is negative or not a number"),
    (1.5, r"^budget 1\.5 is above 100 % of the items; pass a share"),
    ("150%", r"^budget '150%' is above 100 % of the items"),
    (-3, r"^budget -3 is negative; pass a share"),
])
def test_bad_budgets_say_what_to_pass(budget, message):
    with pytest.raises(SilverlabelError, match=message) as info:
        resolve_budget(budget, 10)
    assert str(info.value).endswith("or a count of items as an integer (50)")


def test_gold_oracle_counts_refuses_and_names_the_missing_item():
    oracle = GoldOracle(["a", None, "c", float("nan")], budget=2, items=[10, 11, 12, 13], source="labels.csv")
    assert len(oracle) == 4 and oracle.used == 0 and oracle.left == 2 and oracle.items == ["10", "11", "12", "13"]
    assert oracle.reveal([0, 0]).tolist() == ["a", "a"] and oracle.used == 1 and oracle.left == 1
    assert oracle.revealed.tolist() == [True, False, False, False]
    oracle.revealed[1] = True  # a copy
    assert oracle.used == 1
    with pytest.raises(SilverlabelError, match=r"^item '11' has no label in labels\.csv \(1 asked for are missing\)"):
        oracle.reveal([1])
    assert oracle.used == 1  # a refused reveal costs nothing
    with pytest.raises(SilverlabelError, match=r"^item '13' has no label in labels\.csv"):
        oracle.reveal([3])
    with pytest.raises(SilverlabelError, match=r"^a policy asked for 3 gold labels but the budget is 2; this is a bug"):
        oracle.reveal([2, 3])
    with pytest.raises(IndexError, match=r"^gold index out of range 0\.\.3$"):
        oracle.reveal([4])
    with pytest.raises(IndexError):
        oracle.reveal([-1])
    assert oracle.reveal([]).tolist() == [] and oracle.reveal([2]).tolist() == ["c"] and oracle.left == 0
    fresh = oracle.session(budget=1)
    assert fresh.used == 0 and fresh.budget == 1 and fresh.items == oracle.items and fresh.source == "labels.csv"
    assert fresh.audit()[:3].tolist() == ["a", None, "c"]
    unbounded = GoldOracle(["a", "b"])
    assert unbounded.left is None and unbounded.reveal([0, 1]).tolist() == ["a", "b"]
    with pytest.raises(SilverlabelError, match=r"^item '1' has no label in gold labels"):
        GoldOracle(["a", None]).reveal([1])


def test_top_k_puts_failed_items_first_then_scores_then_position():
    class Ctx:
        n = 6
        failed = np.array([False, True, False, False, True, False])

    score = np.array([0.9, 0.1, np.nan, 0.9, 0.0, 0.5])
    assert top_k(Ctx, score, 6).tolist() == [1, 4, 0, 3, 5, 2]  # NaN scores last
    assert top_k(Ctx, score, 3).tolist() == [1, 4, 0]
    assert top_k(Ctx, score, 0).tolist() == [] and top_k(Ctx, score, -2).tolist() == []
    exclude = np.array([False, False, False, True, True, False])
    assert top_k(Ctx, score, 3, exclude=exclude).tolist() == [1, 0, 5]


# ------------------------------------------------------------------------------------------------ input handling
def test_error_messages_name_the_source_and_the_fix():
    from silverlabel.metrics import (
        accuracy,
        macro_f1,
        per_class,
        per_class_p_unchanged,
        validate_prediction_table,
    )

    with pytest.raises(SilverlabelError, match=r"^table: the table has no rows; it needs one row per \(item, run\)$"):
        evaluate_table(pd.DataFrame(columns=["item", "run", "pred", "gold"]))
    with pytest.raises(SilverlabelError, match=r"^table: the table has no rows"):
        validate_prediction_table(pd.DataFrame(columns=["item", "run", "pred", "gold"]))
    with pytest.raises(SilverlabelError, match=r"^y_true/y_pred: expected 1-D label vectors, got shapes \(1, 2\) and "
                                               r"\(1,\); pass one label per item$"):
        accuracy([[1, 2]], [1])
    with pytest.raises(SilverlabelError, match=r"^y_true/y_pred: no items; pass at least one \(gold, prediction\) "
                                               r"pair$"):
        accuracy([], [])
    # scikit-learn's own first line in brackets (its wording changes between versions: "Mix ...")
    with pytest.raises(SilverlabelError, match=r"^y_true/y_pred: scikit-learn rejected the labels \(Mix .+\); use one "
                                               r"label type \(all str or all int\)$"):
        macro_f1(np.array([1, 2], dtype=object), np.array(["1", "2"], dtype=object))
    for fn in (macro_f1, per_class):
        with pytest.raises(SilverlabelError, match=r"^labels: contains duplicates; pass each label once$"):
            fn(["a"], ["a"], labels=["a", "a"])
    with pytest.raises(SilverlabelError, match=r"^labels: empty label set; pass the study's labels or leave "
                                               r"labels=None$"):
        macro_f1(["a"], ["a"], labels=[])
    with pytest.raises(SilverlabelError, match=r"^labels: empty label set; pass the study's labels$"):
        per_class(["a"], ["a"], labels=[])
    with pytest.raises(SilverlabelError, match=r"^labels: contains duplicates; pass each label once$"):
        per_class_p_unchanged([["a"]], ["a"], labels=["a", "a"])
    with pytest.raises(SilverlabelError, match=r"^y_true: expected one gold label per item \(2\), got shape \(1,\); "
                                               r"pass the gold labels in the same item order as preds' columns$"):
        per_class_p_unchanged([["a", "b"]], ["a"], labels=["a", "b"])


def test_one_label_and_numpy_labels():
    from silverlabel.metrics import macro_f1, per_class, per_class_p_unchanged

    assert per_class(["a"], ["a"], labels=["a"]) == {"a": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}}
    # the first label predicted without gold items still counts (as F1 0), like any other
    assert macro_f1(["b", "b"], ["a", "b"], labels=["a", "b"]) == pytest.approx(1 / 3)
    keys = list(per_class([1, 2], [1, 1], labels=np.array([1, 2])))
    assert keys == [1, 2] and all(type(k) is int for k in keys)  # numpy labels come back as Python values
    shares = per_class_p_unchanged(np.array([[1, 2], [1, 1]]), np.array([1, 2]), labels=np.array([1, 2]))
    assert shares == {1: 1.0, 2: 0.0} and all(type(k) is int for k in shares)


def test_whole_floats_among_strings_are_one_label(tmp_path):
    # pred mixes 2.0 (a float) with strings: compared as strings, 2.0 is "2", the same label as gold's "2"
    df = pd.DataFrame({"item": [1, 2, 3], "run": [0, 0, 0], "pred": [2.0, "1", "x"], "gold": ["2", "1", "1"]})
    ev = evaluate_table(df)
    assert ev.accuracy_mean == pytest.approx(2 / 3) and set(ev.per_class) == {"1", "2", "x"}


def test_csv_reading_keeps_label_like_words_and_finds_empty_cells(tmp_path):
    from silverlabel.metrics import read_prediction_table

    path = tmp_path / "t.csv"
    path.write_text("item,run,pred,gold\n1,0,NA,None\n2,0,,None\n")
    back = read_prediction_table(path)
    assert back["pred"][0] == "NA" and back["gold"].tolist() == ["None", "None"]
    assert pd.isna(back["pred"][1])  # an empty cell is missing
    with pytest.raises(SilverlabelError, match=r"missing value in column 'pred' at row 1"):
        evaluate_table(back, source=str(path))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SilverlabelError, match=r"empty\.csv: the file is empty; it needs a header and at least one "
                                               r"row$"):
        read_prediction_table(empty)


def test_evaluation_logs_what_it_evaluated(caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="silverlabel.metrics.table")
    df = pd.DataFrame({"item": [1, 2, 1, 2], "run": [0, 0, 1, 1], "pred": ["x", "y", "x", "x"],
                       "gold": ["x", "y", "x", "y"]})
    ev = evaluate_table(df, source="t.csv")
    assert "evaluated t.csv: 2 runs x 2 items, 2 labels" in caplog.messages
    assert ev.accuracy_std == pytest.approx(np.std([1.0, 0.5], ddof=1))  # two runs already have a spread
    assert ev.to_dict()["macro_f1_per_run"] == {"0": 1.0, "1": pytest.approx(1 / 3)}


def test_a_policy_that_needs_gold_says_how_to_give_it():
    from silverlabel.mitigations.base import PolicyInput

    ctx = PolicyInput(records=pd.DataFrame({"label": ["a", None]}), label_names=["a", "b"], budget=1, oracle=None,
                      seed=0, ensemble=[], options={}, probs=np.array([[0.9, 0.1], [0.5, 0.5]]),
                      teacher=np.array([0, -1]), failed=np.array([False, True]))
    assert ctx.n == 2 and ctx.margin.tolist() == pytest.approx([0.8, 0.0])
    assert ctx.entropy.tolist() == pytest.approx([-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)), math.log(2)])
    with pytest.raises(SilverlabelError, match=r"^policy 'learned' needs gold labels while it chooses \(a validation "
                                               r"set\); pass an oracle \(or --labels with the validation items "
                                               r"labelled\)$"):
        ctx.require_oracle("learned")
    oracle = GoldOracle(["a", "b"])
    ctx.oracle = oracle
    assert ctx.require_oracle("learned") is oracle


def test_a_label_one_run_never_uses_scores_zero_there():
    # "z" is predicted in run 0 only and has no gold items: run 1's F1 for it is 0 (scikit-learn, labels given)
    gold = ["a", "b", "a", "b"]
    runs = [["a", "z", "a", "b"], ["a", "b", "b", "b"]]
    ev = evaluate_table(pd.DataFrame({"item": list(range(4)) * 2, "run": [0] * 4 + [1] * 4,
                                      "pred": runs[0] + runs[1], "gold": gold * 2}))
    labels = ["a", "b", "z"]
    per_run = [precision_recall_fscore_support(gold, r, labels=labels, zero_division=0)[2] for r in runs]
    assert [ev.per_class[k]["f1"] for k in labels] == pytest.approx(list(np.mean(per_run, axis=0)))


def test_fractional_floats_stay_labels_and_ids():
    df = pd.DataFrame({"item": [1, 2, 1, 2], "run": [0.5, 0.5, 1.5, 1.5], "pred": [1.5, 1.0, 1.0, 1.0],
                       "gold": [1, 1, 1, 1]})
    ev = evaluate_table(df)
    assert ev.accuracy_per_run == {0.5: 0.5, 1.5: 1.0}  # 1.5 is not the label 1; run ids stay numbers
    assert kl_estimate([[0.5, 0.5], [0.9, 0.1]], [0, 0], n_boot=2).se >= 0  # two resamples have a spread


def _grouped_table(seed=0):
    """Two datasets that share item ids, two label sources and two sizes, three runs each: every group is a
    separate little study, and pooling any two would mix them."""
    rng = np.random.default_rng(seed)
    frames = []
    for dataset, classes in (("toxic", ["a", "b", "c"]), ("imdb", ["neg", "pos"])):
        gold = rng.choice(classes, 30)
        for source in ("gold", "teacher:q"):
            for size in (np.int64(20), np.int64(40)):
                for run in range(3):
                    pred = np.where(rng.random(30) < (0.8 if source == "gold" else 0.5), gold,
                                    rng.choice(classes, 30))
                    frames.append(pd.DataFrame({"item": np.arange(30), "run": f"{dataset}|{source}|{size}|{run}",
                                                "dataset": dataset, "label_source": source, "student": "m",
                                                "size": size, "pred": pred, "gold": gold}))
    return pd.concat(frames, ignore_index=True)


def test_groups_are_evaluated_one_at_a_time_in_grid_order_against_scikit_learn():
    import krippendorff
    from sklearn.metrics import accuracy_score, f1_score

    from silverlabel.metrics import GROUP_COLUMNS, evaluate_groups

    df = _grouped_table()
    groups = evaluate_groups(df, source="t.parquet")
    keys = [tuple(g.key.values()) for g in groups]
    assert list(groups[0].key) == list(GROUP_COLUMNS)
    assert keys == list(dict.fromkeys(map(tuple, df[list(GROUP_COLUMNS)].to_numpy().tolist())))  # first seen
    assert len(groups) == 2 * 2 * 2
    for g in groups:
        rows = df[(df[list(g.key)] == pd.Series(g.key)).all(axis=1)]
        runs = [r for _, r in rows.groupby("run", sort=False)]
        acc = [accuracy_score(r["gold"], r["pred"]) for r in runs]
        labels = sorted(set(rows["gold"]) | set(rows["pred"]))
        f1 = [f1_score(r["gold"], r["pred"], labels=labels, average="macro", zero_division=0) for r in runs]
        wide = rows.pivot(index="run", columns="item", values="pred")
        codes = {lab: i for i, lab in enumerate(labels)}
        alpha = krippendorff.alpha(reliability_data=wide.map(codes.get).to_numpy(float),
                                   level_of_measurement="nominal")
        out = g.to_dict()
        assert out["accuracy_mean"] == pytest.approx(np.mean(acc))
        assert out["accuracy_std"] == pytest.approx(np.std(acc, ddof=1))
        assert out["macro_f1_mean"] == pytest.approx(np.mean(f1))
        assert out["krippendorff_alpha"] == pytest.approx(alpha)
        assert out["n_items"] == 30 and out["n_runs"] == 3
        # the key comes first and as plain Python values (JSON-ready), numpy scalars unwrapped
        assert list(out)[:4] == list(GROUP_COLUMNS) and type(out["size"]) is int and out["size"] in (20, 40)
        assert {k: out[k] for k in GROUP_COLUMNS} == {k: (v.item() if hasattr(v, "item") else v)
                                                      for k, v in g.key.items()}


def test_groups_use_the_grouping_columns_present_and_keep_a_missing_value_as_its_own_group():
    from silverlabel.metrics import evaluate_groups

    df = _grouped_table()
    alone = df[(df["dataset"] == "imdb") & (df["label_source"] == "gold") & (df["size"] == 20)]
    plain = alone.drop(columns=["dataset", "label_source", "student", "size"])
    (only,) = evaluate_groups(plain)
    assert only.key == {} and only.to_dict() == evaluate_table(plain).to_dict()
    by_dataset = evaluate_groups(df.drop(columns=["label_source", "student", "size"]).assign(
        run=lambda d: d["run"]))
    assert [g.key for g in by_dataset] == [{"dataset": "toxic"}, {"dataset": "imdb"}]
    nan_source = alone.assign(label_source=None)
    groups = evaluate_groups(pd.concat([alone, nan_source.assign(run=nan_source["run"] + "x")]))
    assert len(groups) == 2 and pd.isna(groups[1].key["label_source"])
    with pytest.raises(SilverlabelError, match=r"t\.csv \[dataset=imdb, label_source=gold, student=m, size=20\]"):
        evaluate_groups(alone.assign(pred=None), source="t.csv")


@pytest.mark.parametrize("preds,message", [
    ([[1, 2], [1]], "preds: rows have different lengths; every run must predict every item (shape n_runs x n_items)"),
    ([1, 2, 3], "preds: expected a 2-D array of shape (n_runs, n_items), got shape (3,); stack one row of "
                "predictions per run"),
    (np.empty((0, 3)), "preds: no runs (shape has 0 rows); pass at least one run of predictions"),
    ([["a", None], ["a", "b"]], "preds: missing prediction at run index 0, item index 1; every run must predict "
                                "every item"),
])
def test_stability_inputs_are_refused_with_the_whole_message(preds, message):
    from silverlabel.metrics import krippendorff_alpha, p_unchanged

    for metric in (p_unchanged, krippendorff_alpha):
        with pytest.raises(SilverlabelError) as exc:
            metric(preds)
        assert str(exc.value) == message


def test_a_non_finite_alpha_from_the_package_is_reported_as_nan_with_a_warning(monkeypatch, caplog):
    """Defensive: complete nominal data cannot make the package divide by zero, but if it ever returns a
    non-finite value the metric says so rather than reporting it."""
    from silverlabel.metrics import krippendorff_alpha, stability

    monkeypatch.setattr(stability.krippendorff, "alpha", lambda **kw: float("inf"))
    with caplog.at_level("WARNING", logger=stability.logger.name):
        value = krippendorff_alpha([["a", "b"], ["b", "a"]])
    assert math.isnan(value)
    assert caplog.messages == ["Krippendorff's alpha is undefined for these predictions (got inf); reporting nan"]


def test_table_errors_and_the_string_comparison_note_are_whole_messages(caplog):
    with pytest.raises(SilverlabelError) as exc:
        evaluate_table([1, 2], source="t.csv")
    assert str(exc.value) == "t.csv: expected a pandas DataFrame, got list"
    with pytest.raises(SilverlabelError) as exc:
        evaluate_table(pd.DataFrame({"item": [1], "pred": ["a"]}), source="t.csv")
    assert str(exc.value) == ("t.csv: missing column(s) 'run', 'gold' (columns present: 'item', 'pred'); the table "
                              "needs columns item, run, pred, gold")
    with pytest.raises(SilverlabelError) as exc:
        evaluate_table(pd.DataFrame(), source="t.csv")
    assert str(exc.value).startswith("t.csv: missing column(s) 'item', 'run', 'pred', 'gold' (columns present: "
                                     "none)")
    df = pd.DataFrame({"item": [1, 2], "run": [0, 0], "pred": [1, 2], "gold": ["1", "x"]})
    with caplog.at_level("INFO", logger="silverlabel.metrics.table"):
        evaluate_table(df)
    assert "pred is integer but gold is string; comparing labels as strings" in caplog.messages


def test_mixed_item_ids_are_compared_as_strings_and_conflicting_golds_are_named():
    # an item column mixing ints and strings is one id space of strings: 1 and "1" are the same item
    df = pd.DataFrame({"item": [1, "b", "1", "b"], "run": [0, 0, 1, 1], "pred": ["x", "y", "x", "x"],
                       "gold": ["x", "y", "x", "y"]})
    ev = evaluate_table(df)
    assert ev.n_items == 2 and ev.accuracy_mean == pytest.approx(0.75)
    three = pd.DataFrame({"item": ["a", "b", "c"] * 2, "run": [0] * 3 + [1] * 3, "pred": ["x"] * 6,
                          "gold": ["x", "y", "z", "x", "w", "z"]})
    with pytest.raises(SilverlabelError) as exc:
        evaluate_table(three, source="t.csv")
    assert str(exc.value) == ("t.csv: item 'b' has different gold labels across runs ('w', 'y'); an item's gold "
                              "label must be the same in every run")
