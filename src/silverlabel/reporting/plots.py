"""The report's figures, drawn with matplotlib's Agg backend into PNG files a person would want to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_pair(fig, axes, path: Path) -> None:
    axes[0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def per_class_f1_figure(rows: list[dict], names: list[str], support: dict):
    """Grouped bars: per-class F1 (mean over seeds) for each label source, rarest class on the left. A bar of
    height 0 draws nothing, so an F1 of 0 is written as "0" (and a class without a score as "n/a") at its place."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(names) + 2), 3.6))
    width = 0.8 / max(len(rows), 1)
    for j, r in enumerate(rows):
        scores = [(r["per_class"].get(n) or {}).get("f1") for n in names]
        x = np.arange(len(names)) + j * width - 0.4 + width / 2
        bars = ax.bar(x, [v or 0.0 for v in scores], width, label=r["label_source"])
        for xi, v in zip(x, scores):
            if not v:
                ax.text(xi, 0.01, "0" if v == 0 else "n/a", ha="center", va="bottom", fontsize=8,
                        color=bars.patches[0].get_facecolor(), fontweight="bold")
    ax.set_xticks(np.arange(len(names)), [f"{n}\n(n={support.get(n, 0)})" for n in names])
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 on the test split (mean over seeds)")
    ax.set_title("Per-class F1 by label source (rarest class first)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig, ax


def per_class_f1(rows: list[dict], names: list[str], support: dict, path: Path) -> None:
    """The per-class F1 chart (see per_class_f1_figure) written to ``path``."""
    fig, _ = per_class_f1_figure(rows, names, support)
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def scaling(rows: list[dict], student: str, plateaus: list[dict], path: Path) -> None:
    """Macro-F1 (band: min-max over seeds) and alpha (band: bootstrap 95 % interval) against training size, one
    line per label source, with each curve's plateau marked."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    sources = list(dict.fromkeys(r["label_source"] for r in rows if r["student"] == student))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, source in enumerate(sources):
        curve = sorted((r for r in rows if r["student"] == student and r["label_source"] == source),
                       key=lambda r: r["size"])
        sizes = [r["size"] for r in curve]
        colour = colours[k % len(colours)]
        f1 = [[v for v in r["macro_f1_per_seed"] if v is not None] or [np.nan] for r in curve]
        axes[0].plot(sizes, [np.mean(v) for v in f1], marker="o", color=colour, label=source)
        axes[0].fill_between(sizes, [np.min(v) for v in f1], [np.max(v) for v in f1], color=colour, alpha=0.15)
        alpha = [np.nan if r["krippendorff_alpha"] is None else r["krippendorff_alpha"] for r in curve]
        lo = [((r["ci"] or {}).get("krippendorff_alpha") or [np.nan, np.nan])[0] for r in curve]
        hi = [((r["ci"] or {}).get("krippendorff_alpha") or [np.nan, np.nan])[1] for r in curve]
        axes[1].plot(sizes, alpha, marker="o", color=colour, label=source)
        axes[1].fill_between(sizes, lo, hi, color=colour, alpha=0.15)
        for ax, metric in ((axes[0], "macro_f1"), (axes[1], "krippendorff_alpha")):
            for p in plateaus:
                if p["label_source"] == source and p["metric"] == metric and p["plateau_size"] is not None:
                    ax.axvline(p["plateau_size"], color=colour, linestyle=":", linewidth=1.2)
    for ax, title in ((axes[0], "macro-F1 (band: min-max over seeds)"),
                      (axes[1], "Krippendorff's α across seeds (band: 95 % CI)")):
        ax.set_xscale("log")
        ax.set_xlabel("training items (log scale); dotted: plateau")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    _save_pair(fig, axes, path)


def confusion_columns(table: dict[str, dict[str, int]]) -> list[str]:
    """The columns of a gold-by-teacher table in its rows' order (so the diagonal is the correct labels), then any
    column that is no gold class (failed calls); also mends tables written with the columns in another order."""
    rows = list(table)
    first = next(iter(table.values()), {})
    return [r for r in rows if r in first] + [c for c in first if c not in rows]


def confusion_figure(table: dict[str, dict[str, int]], *, title: str):
    """Gold (rows, rarest first) by teacher label (columns, the same order): counts and row shares."""
    plt = _plt()
    rows = list(table)
    cols = confusion_columns(table)
    values = np.array([[table[r][c] for c in cols] for r in rows], dtype=float).reshape(len(rows), len(cols))
    share = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2.5, 1.0 * len(rows) + 1.6))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{int(values[i, j])}\n{share[i, j]:.0%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("teacher label")
    ax.set_ylabel("gold label (rarest first)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig, ax


def confusion(table: dict[str, dict[str, int]], path: Path, *, title: str) -> None:
    """The confusion heatmap (see confusion_figure) written to ``path``."""
    fig, _ = confusion_figure(table, title=title)
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def budget_curves(rows: list[dict], path: Path) -> None:
    """Student macro-F1 and alpha against the gold labels spent, one line per policy starting from the plain
    teacher labels at zero gold; no-gold sources (ensemble vote, soft labels) are lone squares at zero, and
    gold-label training is the ceiling. A hollow marker is a student that predicts one class in every run."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    gold = [r for r in rows if r["kind"] == "gold"]
    base = {r["teacher"]: r for r in rows if r["kind"] == "teacher"}
    policies: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["kind"] == "mitigation":
            action = r["label_source"].split("@")[0]
            policies.setdefault((action, r["teacher"]), []).append(r)

    def value(r, metric):
        return np.nan if r[metric] is None else r[metric]

    for (policy, teacher), curve in policies.items():
        spent = sorted(((r["accounting"].get("gold_used", 0), r) for r in curve), key=lambda p: p[0])
        no_gold = all(x == 0 for x, _ in spent)
        points = spent if no_gold or teacher not in base else [(0, base[teacher])] + spent
        for ax, metric in ((axes[0], "macro_f1_mean"), (axes[1], "krippendorff_alpha")):
            line, = ax.plot([p[0] for p in points], [value(p[1], metric) for p in points],
                            marker="s" if no_gold else "o", linestyle="none" if no_gold else "-",
                            label=f"{policy} ({teacher})")
            hollow = [p for p in points if p[1].get("one_class")]
            ax.plot([p[0] for p in hollow], [value(p[1], metric) for p in hollow], linestyle="none",
                    marker="s" if no_gold else "o", color=line.get_color(), markerfacecolor="white")
    for ax, metric, title in ((axes[0], "macro_f1_mean", "student macro-F1"),
                              (axes[1], "krippendorff_alpha", "Krippendorff's α across seeds")):
        for g in gold:
            if g[metric] is not None:
                ax.axhline(g[metric], color="black", linestyle="--", linewidth=1, label="gold labels (ceiling)")
        ax.set_xlabel("gold labels spent")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    fig.legend(seen.values(), seen.keys(), loc="lower center", bbox_to_anchor=(0.5, 0.04), ncol=4, fontsize=8,
               frameon=False)
    fig.text(0.5, 0.01, "hollow marker: every run predicts one class", ha="center", fontsize=7, color="#57606a")
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
