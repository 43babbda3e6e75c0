"""Every confusion matrix shown to a user has one class order on both axes, so its diagonal is the correct labels:
a 3-class case with known counts, checked against scikit-learn's confusion_matrix in the same order."""

import io
import re

import numpy as np
import pandas as pd
from rich.console import Console
from sklearn.metrics import confusion_matrix

from silverlabel.metrics.divergence import confusion_flows
from silverlabel.reporting import plots
from silverlabel.summary import teacher_stats
from silverlabel.teachers.base import _Accumulator

NAMES = ["hate speech", "offensive language", "neither"]  # label order; rarest first is hate, neither, offensive
# (gold, teacher) -> count; gold counts: hate 5, offensive 20, neither 10
COUNTS = {("hate speech", "hate speech"): 2, ("hate speech", "offensive language"): 3,
          ("offensive language", "offensive language"): 17, ("offensive language", "neither"): 2,
          ("offensive language", "hate speech"): 1, ("neither", "neither"): 6, ("neither", "offensive language"): 4}
RARE_FIRST = ["hate speech", "neither", "offensive language"]


def _pairs():
    gold, teacher = [], []
    for (g, t), n in COUNTS.items():
        gold += [g] * n
        teacher += [t] * n
    return np.array(gold, dtype=object), np.array(teacher, dtype=object)


def _frame():
    gold, teacher = _pairs()
    n = len(gold)
    probs = np.full((n, 3), 0.1)
    probs[np.arange(n), [NAMES.index(t) for t in teacher]] = 0.8
    return pd.DataFrame({"item": [str(i) for i in range(n)], "split": "train", "gold": gold, "label": teacher,
                         **{f"p:{name}": probs[:, k] for k, name in enumerate(NAMES)},
                         "prompt_tokens": 10, "seconds": 0.1, "model": "m"})


def test_report_confusion_has_one_order_and_matches_sklearn():
    gold, teacher = _pairs()
    conf = teacher_stats(_frame(), NAMES)["confusion"]
    rows = list(conf)
    cols = plots.confusion_columns(conf)
    assert rows == RARE_FIRST and cols == RARE_FIRST  # before: columns stayed in label order
    assert list(next(iter(conf.values()))) == RARE_FIRST  # results.json itself is in that order
    matrix = np.array([[conf[r][c] for c in cols] for r in rows])
    np.testing.assert_array_equal(matrix, confusion_matrix(gold, teacher, labels=RARE_FIRST))
    correct = {g: COUNTS.get((g, g), 0) for g in RARE_FIRST}
    assert list(np.diag(matrix)) == [correct[g] for g in RARE_FIRST]


def test_heatmap_axes_share_the_order_and_the_diagonal_is_correct():
    gold, teacher = _pairs()
    conf = teacher_stats(_frame(), NAMES)["confusion"]
    fig, ax = plots.confusion_figure(conf, title="t")
    try:
        x = [t.get_text() for t in ax.get_xticklabels()]
        y = [t.get_text() for t in ax.get_yticklabels()]
        assert x == y == RARE_FIRST
        cell = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text().split("\n")[0])
                for t in ax.texts}
        expected = confusion_matrix(gold, teacher, labels=RARE_FIRST)
        for i in range(3):
            for j in range(3):
                assert cell[(i, j)] == expected[i, j]
    finally:
        plots._plt().close(fig)


def test_old_results_with_columns_in_label_order_are_shown_in_row_order():
    old = {g: {c: COUNTS.get((g, c), 0) for c in NAMES} for g in RARE_FIRST}  # what results.json used to hold
    assert plots.confusion_columns(old) == RARE_FIRST
    old_failed = {g: {**row, "(failed)": 1} for g, row in old.items()}
    assert plots.confusion_columns(old_failed) == [*RARE_FIRST, "(failed)"]


def test_confusion_flows_matrix_matches_sklearn():
    gold, teacher = _pairs()
    flows = confusion_flows(list(gold), list(teacher), NAMES)
    assert list(flows.matrix.index) == list(flows.matrix.columns) == NAMES
    np.testing.assert_array_equal(flows.matrix.to_numpy(), confusion_matrix(gold, teacher, labels=NAMES))


def test_annotate_table_has_one_order(monkeypatch):
    from silverlabel import terminal

    gold, teacher = _pairs()
    acc = _Accumulator(NAMES)
    index = {n: i for i, n in enumerate(NAMES)}
    frame = pd.DataFrame({"label": teacher, "error": None, "prompt_tokens": 1})
    acc.add(frame, scored=len(frame), gold=np.array([index[g] for g in gold]), seconds=1.0)
    summary = acc.summary()
    np.testing.assert_array_equal(summary.confusion, confusion_matrix(gold, teacher, labels=NAMES))
    buf = io.StringIO()
    monkeypatch.setattr(terminal, "console", Console(file=buf, width=200))
    terminal.print_annotation_summary(summary, "t")
    cells = [[c.strip() for c in re.split("[│┃]", ln)[1:-1]] for ln in buf.getvalue().splitlines()
             if re.search("[│┃]", ln)]
    assert cells[0][1:4] == NAMES  # columns (teacher) in the rows' (gold) order
    body = {c[0]: c[1:4] for c in cells[1:]}
    for i, g in enumerate(NAMES):
        assert body[g] == [str(v) for v in confusion_matrix(gold, teacher, labels=NAMES)[i]]
