"""The report's sentences: the take-away per dataset and readable lines for what results.json keeps as dicts."""

from __future__ import annotations

import numpy as np
from jinja2 import Environment, PackageLoader


def pct(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{100 * value:.2f}"


def markdown_table(rows: list[dict], columns: list[str], titles: dict[str, str]) -> str:
    head = "| " + " | ".join(titles.get(c, c) for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(str(r.get(c, "")).replace("|", "\\|") for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def markdown_env() -> Environment:
    """Jinja2 for report.md and its parts (templates/*.md.j2): no escaping (Markdown is not HTML; table cells
    escape their pipes in ``mdtable``), and a line holding only a tag leaves nothing behind."""
    env = Environment(loader=PackageLoader("silverlabel.reporting", "templates"), autoescape=False,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(mdtable=markdown_table, pct=pct)
    return env


def split_line(split: dict, test_class_counts: dict) -> str:
    """'200 train, 20 validation, 300 test texts; test classes: negative 150, positive 150'."""
    sizes = ", ".join(f"{n} {name}" for name, n in split.items())
    counts = ", ".join(f"{name} {n}" for name, n in test_class_counts.items())
    return f"{sizes} texts; test classes: {counts}"


def _with_ci(row: dict, metric: str) -> str:
    ci = (row.get("ci") or {}).get(metric)
    return pct(row[metric]) + (f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else "")


def _change(teacher: dict, gold: dict, metric: str, unit: str) -> str:
    if teacher[metric] is None or gold[metric] is None:
        return f"an unknown amount of {unit}"
    diff = 100 * (gold[metric] - teacher[metric])
    return f"{'costs' if diff >= 0 else 'gains'} {abs(diff):.2f} points of {unit}"


def takeaways(rows: list[dict]) -> list[str]:
    """One sentence per teacher label source of one dataset: what its labels cost against gold labels in macro-F1
    and alpha (first student, largest training size), with the bootstrap intervals."""
    if not rows:
        return []
    student = rows[0]["student"]
    largest = max(r["size"] for r in rows)
    top = [r for r in rows if r["student"] == student and r["size"] == largest]
    gold = next((r for r in top if r["kind"] == "gold"), None)
    out = []
    for t in (r for r in top if r["kind"] == "teacher"):
        if gold is None:
            out.append(f"Students ({student}, {largest} training items) on {t['label_source']} labels: macro-F1 "
                       f"{_with_ci(t, 'macro_f1_mean')} %, αK {_with_ci(t, 'krippendorff_alpha')} (no gold-label "
                       "students to compare with).")
            continue
        collapsed = [what for what, r in (("teacher-label", t), ("gold-label", gold)) if r.get("one_class")]
        collapse = (f" Every {' and every '.join(collapsed)} run predicts a single class: "
                    f"{'that αK measures' if len(collapsed) == 1 else 'those αK measure'} collapse, not stability."
                    if collapsed else "")
        out.append(f"Training {student} on {largest} {t['label_source']} labels instead of gold "
                   f"{_change(t, gold, 'macro_f1_mean', 'macro-F1')} ({_with_ci(t, 'macro_f1_mean')} % against "
                   f"{_with_ci(gold, 'macro_f1_mean')} %) and {_change(t, gold, 'krippendorff_alpha', 'αK')} "
                   f"({_with_ci(t, 'krippendorff_alpha')} against {_with_ci(gold, 'krippendorff_alpha')}); "
                   f"brackets: bootstrap 95 % intervals over test items.{collapse}")
    return out
