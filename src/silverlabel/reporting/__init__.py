"""Reports: the Table-1-style comparison with the paper's numbers beside it, per-class scores, the teacher's
confusion matrix, and everything needed to trace a number (config, versions, data provenance).

``report.md`` references PNG files next to it; ``report.html`` is self-contained (inline CSS, images as data
URIs) and renders every dataset string through Jinja2's autoescaping.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from .paper import TABLE1, TABLE1_COLUMNS

log = logging.getLogger(__name__)

COLUMN_TITLES = {"acc": "acc", "macro_f1": "macro-F1", "alpha": "αK", "sd_acc": "σacc", "sd_f1": "σF1",
                 "p_unchanged": "p_uc"}


def _pct(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{100 * value:.2f}"


def table1_rows(sources) -> list[dict]:
    """Rows of Table 1 in percent strings, in the paper's column order, plus the teacher's own accuracy."""
    rows = []
    for s in sources:
        s = s if isinstance(s, dict) else s.__dict__
        rows.append({"labels": s["label_source"], "acc": _pct(s["accuracy_mean"]), "macro_f1": _pct(s["macro_f1_mean"]),
                     "alpha": _pct(s["krippendorff_alpha"]), "sd_acc": _pct(s["accuracy_std"]),
                     "sd_f1": _pct(s["macro_f1_std"]), "p_unchanged": _pct(s["p_unchanged"]),
                     "teacher_acc": _pct(s.get("teacher_accuracy")), "n_train": s["n_train"]})
    return rows


def paper_rows(dataset: str) -> list[dict]:
    return [{"labels": f"paper: {name}", **{c: f"{v:.2f}" for c, v in zip(TABLE1_COLUMNS, values)}}
            for name, values in TABLE1.get(dataset, [])]


def _markdown_table(rows: list[dict], columns: list[str], titles: dict[str, str]) -> str:
    head = "| " + " | ".join(titles.get(c, c) for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _plot_per_class(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result.label_names
    sources = [s.label_source for s in result.sources]
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(names) + 2), 3.6))
    width = 0.8 / len(sources)
    for j, s in enumerate(result.sources):
        f1 = [s.per_class.get(n, {}).get("f1") or 0.0 for n in names]
        ax.bar(np.arange(len(names)) + j * width - 0.4 + width / 2, f1, width, label=s.label_source)
    support = [result.sources[0].per_class.get(n, {}).get("support", 0) for n in names]
    ax.set_xticks(np.arange(len(names)), [f"{n}\n(n={c})" for n, c in zip(names, support)])
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 on the test split (mean over seeds)")
    ax.set_title("Per-class F1 by label source")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def teacher_confusion(ann_frame: pd.DataFrame, label_names: list[str]) -> pd.DataFrame:
    """Counts of gold label (rows) by teacher label (columns) on the training texts, rarest gold class first."""
    train = ann_frame[ann_frame["split"] == "train"]
    cols = [*label_names, "(failed)"] if train["label"].isna().any() else list(label_names)
    table = pd.crosstab(pd.Categorical(train["gold"], categories=label_names),
                        pd.Categorical(train["label"].fillna("(failed)"), categories=cols), dropna=False)
    order = table.sum(axis=1).sort_values(kind="stable").index
    table = table.loc[order]
    table.index.name, table.columns.name = "gold", "teacher"
    return table


def _plot_confusion(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = table.to_numpy()
    share = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * values.shape[1] + 2.5, 1.0 * values.shape[0] + 1.6))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, f"{values[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(values.shape[1]), [str(c) for c in table.columns], rotation=20, ha="right")
    ax.set_yticks(range(values.shape[0]), [str(i) for i in table.index])
    ax.set_xlabel("teacher label")
    ax.set_ylabel("gold label (rarest first)")
    ax.set_title("Teacher vs gold on the training texts")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_reports(result, *, ann, predictions: pd.DataFrame, out: Path) -> dict[str, Path]:
    """Write report.md, report.html and their figures into ``out``; returns the paths."""
    from ..study import atomic_write_text

    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    per_class_png, confusion_png = figures / "per_class_f1.png", figures / "teacher_confusion.png"
    _plot_per_class(result, per_class_png)
    confusion = teacher_confusion(ann.frame, result.label_names)
    _plot_confusion(confusion, confusion_png)

    rows = table1_rows(result.sources)
    paper = paper_rows(result.dataset)
    columns = ["labels", *TABLE1_COLUMNS]
    titles = {"labels": "labels", **COLUMN_TITLES, "teacher_acc": "teacher acc", "n_train": "n_train"}
    names = result.label_names
    per_class_rows = []
    for s in result.sources:
        row = {"labels": s.label_source}
        for n in names:
            row[n] = _pct(s.per_class.get(n, {}).get("f1"))
        per_class_rows.append(row)
    support = {n: result.sources[0].per_class.get(n, {}).get("support", 0) for n in names}
    ctx = {
        "result": result, "rows": rows, "paper": paper, "columns": columns, "titles": titles,
        "names": names, "support": support, "per_class_rows": per_class_rows, "confusion": confusion,
        "annotation": result.annotation, "config_json": json.dumps(result.config, indent=2),
        "versions": result.versions,
    }
    md = [f"# silverlabel study: {result.dataset}", "",
          f"- data: {result.provenance}" + ("" if result.real_data else " — **offline stand-in, not the paper's data**"),
          f"- teacher: `{result.teacher}`; student: `{result.student}`; seeds: {result.sources[0].seeds}",
          f"- sizes: train {result.sources[0].n_train}, test {result.sources[0].n_test}", "",
          "## Table 1: gold vs teacher labels (percent)", "",
          _markdown_table(rows, [*columns, "teacher_acc", "n_train"], titles), ""]
    if paper:
        md += ["The paper's numbers for this dataset, for orientation only (RoBERTa-base student, Qwen2.5 3B/7B "
               "teachers, 5000 training items, 5 seeds):", "", _markdown_table(paper, columns, titles), ""]
    md += ["## Per-class F1 (percent; rarest classes are where teacher labels hurt most)", "",
           _markdown_table(per_class_rows, ["labels", *names], {"labels": "labels",
                                                               **{n: f"{n} (n={support[n]})" for n in names}}),
           "", "![per-class F1](figures/per_class_f1.png)", "",
           "## The teacher", "",
           f"- accuracy on the training texts: {_pct(result.sources[-1].teacher_accuracy)} %, macro-F1 "
           f"{_pct(result.sources[-1].teacher_macro_f1)} %",
           f"- items: {result.annotation['items']} ({result.annotation['cached']} from the cache), failed: "
           f"{result.annotation['failed']}, prompt tokens: {result.annotation['prompt_tokens']}, "
           f"seconds: {result.annotation['seconds']:.1f}",
           f"- label counts: {result.annotation['label_counts']}", "",
           "Confusion matrix (rows gold, rarest first; columns teacher):", "",
           _markdown_table([{"gold": idx, **{str(c): int(v) for c, v in row.items()}}
                            for idx, row in confusion.iterrows()], ["gold", *map(str, confusion.columns)], {}),
           "", "![teacher confusion](figures/teacher_confusion.png)", "",
           "## Provenance", "", "```json", ctx["config_json"], "```", "",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in result.versions.items()), ""]
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, "\n".join(md))
    env = Environment(loader=PackageLoader("silverlabel.reporting", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default=True))
    html = env.get_template("report.html.j2").render(
        **ctx, per_class_png=_data_uri(per_class_png), confusion_png=_data_uri(confusion_png))
    atomic_write_text(html_path, html)
    return {"markdown": md_path, "html": html_path}
