"""The teacher's reliability diagram: how often its P_S is right at each confidence (the budget curves of the
policies are in plots.py, beside the report's other figures)."""

from __future__ import annotations

import io
from pathlib import Path

from ..metrics.divergence import Calibration


def reliability_figure(cal: Calibration, *, title: str = "teacher calibration"):
    """The reliability diagram as a matplotlib figure and its two axes (bins above, item counts below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = cal.bins
    width = (bins["upper"] - bins["lower"]).to_numpy()
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    filled = bins["count"].to_numpy() > 0
    ax.bar(bins["lower"][filled], bins["accuracy"][filled], width=width[filled], align="edge",
           edgecolor="black", color="#4c72b0", alpha=0.8, label="accuracy of the bin's items")
    # the dots sit at (mean confidence, accuracy) of each bin; not clipped, so a bin at 1.0 shows whole
    ax.plot(bins["confidence"][filled], bins["accuracy"][filled], "o", color="#c44e52", ms=4, clip_on=False,
            label="bin's mean confidence (x) and accuracy (y)")
    ax.set(ylim=(0, 1.05), ylabel="accuracy vs gold")
    ax.set_title(f"{title}\nexpected calibration error {100 * cal.ece:.1f} %", fontsize=10)
    ax_n.bar(bins["lower"], bins["count"], width=width, align="edge", edgecolor="black", color="#8c8c8c")
    ax_n.set(xlim=(0, 1.02), xlabel="teacher confidence (max P_S)", ylabel="items")
    # below the axes, never over a bar
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=1, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return fig, (ax, ax_n)


def reliability_diagram(cal: Calibration, *, title: str = "teacher calibration",
                        path: Path | str | None = None) -> bytes:
    """A reliability diagram (accuracy against confidence per bin, with item counts) as PNG bytes; also written
    to ``path`` when given."""
    import matplotlib.pyplot as plt

    fig, _ = reliability_figure(cal, title=title)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
    finally:
        plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data
