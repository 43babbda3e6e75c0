"""Metrics against known answers: hand-computed tables, scikit-learn and the krippendorff package called directly,
an independent plain-Python alpha, and plain loops."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from silverlabel.errors import SilverlabelError
from silverlabel.metrics import (
    Evaluation,
    accuracy,
    evaluate_table,
    krippendorff_alpha,
    macro_f1,
    p_unchanged,
    pairwise_churn,
    per_class,
    per_class_p_unchanged,
    read_prediction_table,
    validate_prediction_table,
)

# Degenerate cases must not warn: any warning (RuntimeWarning, UndefinedMetricWarning, ...) fails the test.
pytestmark = pytest.mark.filterwarnings("error")


# --- independent reference implementations (plain Python, no numpy, no krippendorff package) -----------------


def reference_nominal_alpha(data: list[list]) -> float:
    """Nominal alpha from the coincidence matrix, following Krippendorff (2011); None marks a missing value."""
    n_units = len(data[0])
    values = sorted({v for row in data for v in row if v is not None}, key=str)
    o = {(c, k): 0.0 for c in values for k in values}
    for u in range(n_units):
        unit = [row[u] for row in data if row[u] is not None]
        m = len(unit)
        if m < 2:
            continue  # a unit coded once is not pairable
        for i in range(m):
            for j in range(m):
                if i != j:
                    o[(unit[i], unit[j])] += 1.0 / (m - 1)
    n_c = {c: sum(o[(c, k)] for k in values) for c in values}
    n = sum(n_c.values())
    observed = sum(o[(c, k)] for c in values for k in values if c != k)
    expected = sum(n_c[c] * n_c[k] for c in values for k in values if c != k) / (n - 1)
    return 1.0 - observed / expected


def reference_p_unchanged(rows: list[list]) -> float:
    n_items = len(rows[0])
    return sum(all(row[i] == rows[0][i] for row in rows) for i in range(n_items)) / n_items


def reference_churn(rows: list[list]) -> float:
    pairs = list(itertools.combinations(range(len(rows)), 2))
    shares = [sum(a != b for a, b in zip(rows[r], rows[s])) / len(rows[0]) for r, s in pairs]
    return sum(shares) / len(shares)


def random_preds(rng: np.random.Generator, *, as_str: bool) -> list[list]:
    """Runs that copy a shared 'consensus' label with some probability, so alpha spans a useful range."""
    n_runs = int(rng.integers(2, 7))
    n_items = int(rng.integers(2, 40))
    n_labels = int(rng.integers(2, 6))
    consensus = rng.integers(0, n_labels, n_items)
    keep = rng.random()
    rows = np.where(rng.random((n_runs, n_items)) < keep, consensus, rng.integers(0, n_labels, (n_runs, n_items)))
    if len(np.unique(rows)) < 2:
        rows[0, 0] = (rows[0, 0] + 1) % n_labels  # the reference divides by zero on a single value
    if as_str:
        return [[f"label-{v}" for v in row] for row in rows.tolist()]
    return rows.tolist()


# --- a hand-worked study: 6 items, 3 runs ----------------------------------------------------------------------
#
# gold     a a b b c c
# run 7    a a b c c c   accuracy 5/6; F1 a=1, b=2/3, c=4/5            -> macro 37/45
# run 13   a b b b c a   accuracy 4/6; F1 a=1/2, b=4/5, c=2/3          -> macro 59/90
# run 42   a a b b c c   accuracy 1;   macro 1
# Items 1, 3, 5 never change -> p_unchanged 1/2. Pairwise disagreement: (7,13) 3/6, (7,42) 1/6, (13,42) 2/6
# -> churn 1/3. Coincidences: o_cc = 4 and o_ck = 1 (c != k) for each of the 3 labels, n_c = 6, n = 18
# -> alpha = 1 - 17 * 6 / (6 * 36) = 19/36.

GOLD = ["a", "a", "b", "b", "c", "c"]
RUNS = {
    7: ["a", "a", "b", "c", "c", "c"],
    13: ["a", "b", "b", "b", "c", "a"],
    42: ["a", "a", "b", "b", "c", "c"],
}


def study_table() -> pd.DataFrame:
    rows = [
        {"item": f"item-{i}", "run": run, "pred": pred, "gold": GOLD[i]}
        for run, preds in RUNS.items()
        for i, pred in enumerate(preds)
    ]
    # Shuffled, so nothing relies on the row order of the input.
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)


def test_accuracy_and_macro_f1_match_hand_computation():
    assert accuracy(GOLD, RUNS[7]) == pytest.approx(5 / 6)
    assert accuracy(GOLD, RUNS[13]) == pytest.approx(4 / 6)
    assert macro_f1(GOLD, RUNS[7]) == pytest.approx(float(Fraction(37, 45)))
    assert macro_f1(GOLD, RUNS[13]) == pytest.approx(float(Fraction(59, 90)))
    assert macro_f1(GOLD, RUNS[42], labels=["a", "b", "c"]) == 1.0


def test_per_class_matches_hand_computation():
    scores = per_class(GOLD, RUNS[13], labels=["a", "b", "c"])
    assert list(scores) == ["a", "b", "c"]
    assert scores["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert scores["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert scores["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})


def test_class_absent_from_predictions_counts_as_zero():
    gold, pred = ["a", "a", "b", "b"], ["a", "a", "a", "a"]
    # a: P 1/2, R 1, F1 2/3; b: never predicted but has support -> F1 0.
    assert macro_f1(gold, pred) == pytest.approx(1 / 3)
    scores = per_class(gold, pred, labels=["a", "b"])
    assert scores["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}


def test_predicted_class_without_support_counts_as_zero():
    # a: P 1, R 1/2, F1 2/3; b: predicted but no gold items -> F1 0; same as scikit-learn's default.
    assert macro_f1(["a", "a"], ["a", "b"]) == pytest.approx(1 / 3)
    assert macro_f1(["a", "a"], ["a", "b"], labels=["a", "b"]) == pytest.approx(1 / 3)


def test_label_with_neither_support_nor_predictions_is_left_out():
    # Documented difference from scikit-learn (which would give (2/3 + 0 + 0) / 3 = 2/9).
    gold, pred = ["a", "a", "b", "b"], ["a", "a", "a", "a"]
    assert macro_f1(gold, pred, labels=["a", "b", "c"]) == pytest.approx(1 / 3)
    assert math.isnan(macro_f1(gold, pred, labels=["z"]))
    scores = per_class(gold, pred, labels=["a", "b", "c"])
    assert scores["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_classification_input_errors():
    with pytest.raises(SilverlabelError, match="lengths differ"):
        accuracy([1, 2], [1])
    with pytest.raises(SilverlabelError, match="no items"):
        macro_f1([], [])
    with pytest.raises(SilverlabelError, match="one label type"):
        macro_f1(np.array([1, 2], dtype=object), np.array(["1", "2"], dtype=object))


# --- stability ---------------------------------------------------------------------------------------------------


def test_stability_matches_hand_computation():
    preds = [RUNS[7], RUNS[13], RUNS[42]]
    assert krippendorff_alpha(preds) == pytest.approx(19 / 36)
    assert reference_nominal_alpha(preds) == pytest.approx(19 / 36)
    assert p_unchanged(preds) == pytest.approx(0.5)
    assert pairwise_churn(preds) == pytest.approx(1 / 3)


def test_reference_alpha_reproduces_krippendorff_2011_nominal_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", 4 observers x 12 units with missing
    # values; nominal alpha = 0.743. Checks the reference implementation the random tests below rely on.
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    assert round(reference_nominal_alpha(data), 3) == 0.743


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("as_str", [False, True])
def test_stability_matches_independent_implementations_on_random_tables(seed, as_str):
    rows = random_preds(np.random.default_rng(seed), as_str=as_str)
    assert krippendorff_alpha(rows) == pytest.approx(reference_nominal_alpha(rows), abs=1e-12)
    assert krippendorff_alpha(rows) == pytest.approx(package_alpha(rows), abs=1e-12)
    assert krippendorff_alpha(np.array(rows, dtype=object)) == pytest.approx(reference_nominal_alpha(rows), abs=1e-12)
    assert p_unchanged(rows) == pytest.approx(reference_p_unchanged(rows))
    assert pairwise_churn(rows) == pytest.approx(reference_churn(rows))


def test_alpha_value_does_not_depend_on_label_names():
    rows = random_preds(np.random.default_rng(99), as_str=False)
    renamed = [[f"x{v * 7}" for v in row] for row in rows]
    assert krippendorff_alpha(rows) == pytest.approx(krippendorff_alpha(renamed))


def test_one_run():
    preds = [["a", "b", "c"]]
    assert math.isnan(krippendorff_alpha(preds))
    assert p_unchanged(preds) == 1.0
    assert pairwise_churn(preds) == 0.0


def test_all_runs_identical():
    preds = [["a", "b", "c", "a"]] * 4
    assert krippendorff_alpha(preds) == 1.0
    assert p_unchanged(preds) == 1.0
    assert pairwise_churn(preds) == 0.0


def test_single_predicted_class_everywhere():
    # The krippendorff package raises here (one value in the domain); we define perfect agreement.
    preds = np.zeros((5, 10), dtype=int)
    assert krippendorff_alpha(preds) == 1.0
    assert p_unchanged(preds) == 1.0
    assert pairwise_churn(preds) == 0.0


def test_no_items():
    preds = np.empty((3, 0), dtype=int)
    assert math.isnan(krippendorff_alpha(preds))
    assert math.isnan(p_unchanged(preds))
    assert math.isnan(pairwise_churn(preds))


def test_per_class_p_unchanged():
    preds = [["a", "b", "c", "a"], ["a", "b", "b", "a"]]
    gold = ["a", "b", "b", "a"]
    result = per_class_p_unchanged(preds, gold, labels=["a", "b", "c"])
    assert list(result) == ["a", "b", "c"]
    assert result["a"] == 1.0
    assert result["b"] == 0.5
    assert math.isnan(result["c"])  # no gold items of class c


def test_stability_input_errors():
    with pytest.raises(SilverlabelError, match="2-D"):
        p_unchanged(["a", "b"])
    with pytest.raises(SilverlabelError, match="missing prediction at run index 1, item index 0"):
        krippendorff_alpha(np.array([["a", "b"], [None, "b"]], dtype=object))
    with pytest.raises(SilverlabelError, match="one gold label per item"):
        per_class_p_unchanged([["a", "b"]], ["a"], labels=["a", "b"])


# --- the prediction table ----------------------------------------------------------------------------------------


def test_evaluate_table_matches_hand_computation():
    ev = evaluate_table(study_table())
    assert isinstance(ev, Evaluation)
    assert (ev.n_items, ev.n_runs) == (6, 3)
    assert list(ev.accuracy_per_run) == [7, 13, 42]  # sorted run ids
    assert ev.accuracy_per_run == pytest.approx({7: 5 / 6, 13: 4 / 6, 42: 1.0})
    assert ev.accuracy_mean == pytest.approx(5 / 6)
    assert ev.accuracy_std == pytest.approx(1 / 6)  # deviations 0, -1/6, +1/6; ddof=1
    macros = [Fraction(37, 45), Fraction(59, 90), Fraction(1)]
    assert ev.macro_f1_per_run == pytest.approx({7: float(macros[0]), 13: float(macros[1]), 42: 1.0})
    assert ev.macro_f1_mean == pytest.approx(float(sum(macros) / 3))
    mean = sum(macros) / 3
    assert ev.macro_f1_std == pytest.approx(math.sqrt(float(sum((m - mean) ** 2 for m in macros) / 2)))
    assert ev.krippendorff_alpha == pytest.approx(19 / 36)
    assert ev.p_unchanged == pytest.approx(0.5)
    assert ev.pairwise_churn == pytest.approx(1 / 3)
    assert list(ev.per_class) == ["a", "b", "c"]
    assert ev.per_class["a"] == pytest.approx(
        {"precision": 5 / 6, "recall": 5 / 6, "f1": 5 / 6, "support": 2, "p_unchanged": 0.5}
    )
    assert ev.per_class["b"] == pytest.approx(
        {"precision": 8 / 9, "recall": 5 / 6, "f1": (2 / 3 + 0.8 + 1) / 3, "support": 2, "p_unchanged": 0.5}
    )
    assert ev.per_class["c"] == pytest.approx(
        {"precision": 8 / 9, "recall": 5 / 6, "f1": (0.8 + 2 / 3 + 1) / 3, "support": 2, "p_unchanged": 0.5}
    )


def _codes(rows) -> np.ndarray:
    """Integer codes of a (runs, items) label table, for the krippendorff package (it wants numbers)."""
    _, codes = np.unique(np.asarray(rows, dtype=object).astype(str), return_inverse=True)
    return codes.reshape(np.shape(rows)).astype(float)


def package_alpha(rows) -> float:
    """Nominal alpha straight from the krippendorff package, runs as coders and items as units."""
    return float(krippendorff.alpha(reliability_data=_codes(rows), level_of_measurement="nominal"))


def sklearn_macro_f1(gold, pred) -> float:
    """scikit-learn's macro F1 over the labels present in this run's gold or predictions (its default)."""
    return float(f1_score(gold, pred, average="macro", zero_division=0))


def _wide(rows, gold) -> pd.DataFrame:
    return pd.DataFrame({"item": np.tile(np.arange(len(gold)), len(rows)),
                         "run": np.repeat([f"seed{r}" for r in range(len(rows))], len(gold)),
                         "pred": np.asarray(rows, dtype=object).ravel(), "gold": np.tile(gold, len(rows))})


def test_evaluate_table_agrees_with_scikit_learn_and_the_krippendorff_package():
    rng = np.random.default_rng(5)
    n_items, n_runs, labels = 300, 4, ["neg", "neu", "pos", "rare"]
    gold = rng.choice(labels[:3], n_items)  # "rare" has no gold items, some runs predict it
    preds = np.where(rng.random((n_runs, n_items)) < 0.7, gold, rng.choice(labels, (n_runs, n_items)))
    ev = evaluate_table(_wide(preds, gold))
    for r in range(n_runs):
        assert ev.accuracy_per_run[f"seed{r}"] == pytest.approx(accuracy_score(gold, preds[r]))
        assert ev.macro_f1_per_run[f"seed{r}"] == pytest.approx(sklearn_macro_f1(gold, preds[r]))
    runs = [precision_recall_fscore_support(gold, preds[r], labels=labels, zero_division=0) for r in range(n_runs)]
    for k, label in enumerate(labels):
        for j, key in enumerate(("precision", "recall", "f1")):
            assert ev.per_class[label][key] == pytest.approx(np.mean([run[j][k] for run in runs]))
        assert ev.per_class[label]["support"] == int((gold == label).sum())
    assert math.isnan(ev.per_class["rare"]["p_unchanged"])
    assert ev.krippendorff_alpha == pytest.approx(package_alpha(preds), abs=1e-12)
    assert ev.pairwise_churn == pytest.approx(reference_churn(preds.tolist()))


# Tables on which a metric is easy to get wrong: every item split evenly between two labels (ties), a class of the
# study that this run never predicts nor has gold items for (absent), and one class only.
TIES = [["a", "b", "a", "b", "c", "c"], ["b", "a", "b", "a", "c", "c"],
        ["a", "b", "b", "a", "c", "a"], ["b", "a", "a", "b", "c", "a"]]
TIES_GOLD = ["a", "a", "b", "b", "c", "c"]
ABSENT = [["a", "a", "a", "b", "a", "a"], ["a", "a", "b", "b", "a", "a"], ["a", "b", "a", "b", "a", "b"]]
ABSENT_GOLD = ["a", "a", "b", "b", "c", "c"]  # c has gold items and is never predicted; d (below) has neither


@pytest.mark.parametrize("rows, gold", [(TIES, TIES_GOLD), (ABSENT, ABSENT_GOLD)], ids=["ties", "absent"])
def test_metrics_match_the_libraries_on_hard_tables(rows, gold):
    ev = evaluate_table(_wide(rows, gold))
    assert ev.krippendorff_alpha == pytest.approx(package_alpha(rows), abs=1e-12)
    assert krippendorff_alpha(rows) == pytest.approx(package_alpha(rows), abs=1e-12)
    accs = [accuracy_score(gold, r) for r in rows]
    f1s = [sklearn_macro_f1(gold, r) for r in rows]
    assert ev.accuracy_mean == pytest.approx(np.mean(accs)) and ev.accuracy_std == pytest.approx(np.std(accs, ddof=1))
    assert ev.macro_f1_mean == pytest.approx(np.mean(f1s)) and ev.macro_f1_std == pytest.approx(np.std(f1s, ddof=1))
    for r in rows:
        assert accuracy(gold, r) == pytest.approx(accuracy_score(gold, r))
        assert macro_f1(gold, r) == pytest.approx(sklearn_macro_f1(gold, r))
        # a study label with neither gold items nor predictions is left out (scikit-learn would count it as 0)
        assert macro_f1(gold, r, labels=["a", "b", "c", "d"]) == pytest.approx(sklearn_macro_f1(gold, r))
        p, rec, f, sup = precision_recall_fscore_support(gold, r, labels=["a", "b", "c", "d"], zero_division=0)
        scores = per_class(gold, r, labels=["a", "b", "c", "d"])
        assert [scores[k]["precision"] for k in "abcd"] == pytest.approx(list(p))
        assert [scores[k]["recall"] for k in "abcd"] == pytest.approx(list(rec))
        assert [scores[k]["f1"] for k in "abcd"] == pytest.approx(list(f))
        assert [scores[k]["support"] for k in "abcd"] == list(sup)


def test_one_class_everywhere_is_perfect_agreement_where_the_package_refuses():
    rows = [["x"] * 6] * 3
    with pytest.raises(ValueError, match="more than one value in the domain"):
        package_alpha(rows)  # the package has no value here; ours is defined as 1.0 (stability.py)
    ev = evaluate_table(_wide(rows, ["x", "x", "y", "y", "x", "y"]))
    assert ev.krippendorff_alpha == 1.0 and ev.p_unchanged == 1.0 and ev.pairwise_churn == 0.0
    assert ev.macro_f1_mean == pytest.approx(sklearn_macro_f1(["x", "x", "y", "y", "x", "y"], ["x"] * 6))
    assert ev.accuracy_mean == pytest.approx(0.5)


def test_evaluate_table_one_run_and_json():
    df = pd.DataFrame({"item": [1, 2, 3], "run": [0, 0, 0], "pred": [1, 1, 1], "gold": [1, 2, 1]})
    ev = evaluate_table(df)
    assert ev.accuracy_std == 0.0 and ev.macro_f1_std == 0.0
    assert math.isnan(ev.krippendorff_alpha)
    assert ev.p_unchanged == 1.0 and ev.pairwise_churn == 0.0
    out = ev.to_dict()
    json.dumps(out, allow_nan=False)  # JSON-safe: nan became None, numpy scalars became Python
    assert out["krippendorff_alpha"] is None
    assert set(out["per_class"]) == {"1", "2"}
    assert out["accuracy_per_run"] == {"0": pytest.approx(2 / 3)}
    assert type(out["per_class"]["1"]["support"]) is int


def test_evaluate_table_single_predicted_class_everywhere():
    df = pd.DataFrame(
        {"item": [1, 2, 1, 2], "run": [0, 0, 1, 1], "pred": ["x", "x", "x", "x"], "gold": ["x", "y", "x", "y"]}
    )
    ev = evaluate_table(df)
    assert ev.krippendorff_alpha == 1.0
    assert ev.per_class["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "p_unchanged": 1.0}
    assert ev.macro_f1_mean == pytest.approx(1 / 3)  # x: P 1/2, R 1 -> 2/3; y: 0


def test_int_and_str_labels_are_compared_consistently():
    as_int = pd.DataFrame({"item": [1, 2, 1, 2], "run": [0, 0, 1, 1], "pred": [1, 2, 1, 1], "gold": [1, 2, 1, 2]})
    ref = evaluate_table(as_int).to_dict()
    assert ref["accuracy_mean"] == pytest.approx(0.75)
    variants = [
        as_int.assign(pred=["1", "2", "1", "1"]),  # pred str, gold int
        as_int.assign(pred=[1, "2", 1.0, "1"]),  # one column mixing int, str and float
        as_int.assign(pred=[1.0, 2.0, 1.0, 1.0]),  # floats, as CSV gives an int column
    ]
    for df in variants:
        assert evaluate_table(df).to_dict() == ref


def _base() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item": ["i1", "i2", "i3", "i1", "i2", "i3"],
            "run": [0, 0, 0, 1, 1, 1],
            "pred": list("abbaab"),
            "gold": list("abbabb"),
        }
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda df: df.rename(columns={"pred": "label"}).drop(columns="gold"),
            r"^t\.csv: missing column\(s\) 'pred', 'gold' \(columns present: 'item', 'run', 'label'\)",
        ),
        (lambda df: df.iloc[:0], r"^t\.csv: the table has no rows"),
        (
            lambda df: pd.concat([df, df.iloc[[4]]], ignore_index=True),
            r"^t\.csv: item 'i2' appears more than once in run 1 \(row 6\)",
        ),
        (lambda df: df.drop(index=[4, 5]), r"^t\.csv: run 1 lacks 2 of 3 items \(first missing: item 'i2'\)"),
        (
            lambda df: df.assign(gold=list("abbaba")),
            r"^t\.csv: item 'i3' has different gold labels across runs \('a', 'b'\)",
        ),
        (
            lambda df: df.assign(pred=["a", "b", None, "a", "a", "b"]),
            r"^t\.csv: missing value in column 'pred' at row 2 \(item 'i3', run 0\)",
        ),
        (
            lambda df: df.assign(gold=["a", "b", "b", np.nan, "b", "b"]),
            r"^t\.csv: missing value in column 'gold' at row 3 \(item 'i1', run 1\)",
        ),
    ],
    ids=["missing-columns", "empty", "duplicate", "run-lacks-items", "gold-differs", "null-pred", "null-gold"],
)
def test_validation_errors(mutate, message):
    with pytest.raises(SilverlabelError, match=message) as info:
        validate_prediction_table(mutate(_base()), source="t.csv")
    assert "\n" not in str(info.value)
    with pytest.raises(SilverlabelError, match=message):
        evaluate_table(mutate(_base()), source="t.csv")


def test_validate_returns_the_four_columns():
    df = _base().assign(extra=1)
    tidy = validate_prediction_table(df)
    assert list(tidy.columns) == ["item", "run", "pred", "gold"]
    assert len(tidy) == 6


# --- reading files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".pq"])
@pytest.mark.parametrize("labels", [["neg", "None", "pos"], [0, 1, 2]], ids=["str", "int"])
def test_read_prediction_table_round_trip(tmp_path, suffix, labels):
    rng = np.random.default_rng(0)
    n_items, n_runs = 20, 3
    choices = np.array(labels, dtype=object)
    gold = rng.choice(choices, n_items)
    pred = np.where(rng.random((n_runs, n_items)) < 0.8, gold, rng.choice(choices, (n_runs, n_items)))
    df = pd.DataFrame(
        {
            "item": np.tile(np.arange(n_items), n_runs),
            "run": np.repeat(np.arange(n_runs), n_items),
            "pred": pred.ravel().tolist(),
            "gold": np.tile(gold, n_runs).tolist(),
        }
    )
    path = tmp_path / f"preds{suffix}"
    if suffix in (".csv", ".tsv"):
        df.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    else:
        df.to_parquet(path, index=False)
    back = read_prediction_table(path)
    assert list(back.columns) == ["item", "run", "pred", "gold"]
    assert back["pred"].tolist() == df["pred"].tolist()  # "None" stays a label, ints stay ints
    assert evaluate_table(back, source=str(path)).to_dict() == evaluate_table(df).to_dict()


def test_read_prediction_table_errors(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(SilverlabelError, match=r"nope\.csv: prediction table not found"):
        read_prediction_table(missing)
    odd = tmp_path / "preds.xlsx"
    odd.write_text("x")
    with pytest.raises(SilverlabelError, match=r"preds\.xlsx: unknown extension '\.xlsx'"):
        read_prediction_table(odd)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet")
    with pytest.raises(SilverlabelError, match=r"broken\.parquet: cannot be read as parquet \("):
        read_prediction_table(broken)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SilverlabelError, match=r"empty\.csv: the file is empty"):
        read_prediction_table(empty)
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(SilverlabelError, match=r"dir\.csv: not a file"):
        read_prediction_table(folder)
