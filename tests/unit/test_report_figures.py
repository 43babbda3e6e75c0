"""The report's figures say what they show: the reliability diagram's legend names its markers, sits outside the
plotting area and leaves a bin at accuracy 1.0 whole; the per-class F1 chart marks a class whose F1 is 0."""

import numpy as np
import pytest

from silverlabel.metrics.divergence import calibration
from silverlabel.reporting import plots
from silverlabel.reporting.teacher_plots import reliability_figure


@pytest.fixture
def cal():
    rng = np.random.default_rng(0)
    n = 400
    gold = rng.integers(0, 3, n)
    probs = np.full((n, 3), 0.01)
    probs[:, 0] = 0.98  # a confident bin that is always right: accuracy 1.0 at confidence 0.98
    probs[gold != 0] = [0.4, 0.35, 0.25]  # a less confident bin, always wrong
    probs /= probs.sum(axis=1, keepdims=True)
    return calibration(probs, gold, n_bins=10)


def test_reliability_legend_names_the_markers_and_covers_no_bar(cal):
    fig, (ax, ax_n) = reliability_figure(cal, title="t")
    try:
        assert (cal.bins["accuracy"] == 1.0).any()  # the case that used to be clipped
        assert ax.get_ylim()[1] > 1.0
        dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
        assert dots and not dots[0].get_clip_on()
        legend = fig.legends[0] if fig.legends else ax.get_legend()
        texts = [t.get_text() for t in legend.get_texts()]
        assert any("mean confidence" in t and "accuracy" in t for t in texts)  # what the dots are: both coordinates
        fig.canvas.draw()
        box = legend.get_window_extent()
        for axes in (ax, ax_n):  # outside both plotting areas, so it covers no bar
            assert not box.overlaps(axes.get_window_extent())
    finally:
        plots._plt().close(fig)


def test_per_class_f1_marks_zero_scores():
    names = ["hate speech", "neither", "offensive language"]
    rows = [{"label_source": "gold", "per_class": {"hate speech": {"f1": 0.0}, "neither": {"f1": 0.6},
                                                   "offensive language": {"f1": 0.9}}},
            {"label_source": "teacher", "per_class": {"hate speech": {"f1": 0.0}, "neither": {"f1": 0.0},
                                                      "offensive language": {"f1": 0.8}}}]
    fig, ax = plots.per_class_f1_figure(rows, names, {"hate speech": 5, "neither": 10, "offensive language": 30})
    try:
        zeros = [t for t in ax.texts if t.get_text() == "0"]
        assert len(zeros) == 3  # gold on hate speech, teacher on hate speech and neither
        xs = sorted(round(t.get_position()[0]) for t in zeros)
        assert xs == [0, 0, 1]  # at their classes' places on the axis
        assert all(t.get_visible() for t in zeros)
    finally:
        plots._plt().close(fig)
