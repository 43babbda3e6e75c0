"""The study report: Table 1 per dataset with bootstrap intervals and the paper's numbers beside it, scaling
curves with their plateaus, minority classes (per-class F1, the teacher's confusion matrix, rarest first), the
teachers' accuracy and cost, and everything needed to trace a number (provenance, config, versions, timing).

It is drawn only from what a study leaves on disk (``results.json``), so ``study report DIR`` gives the same
report whichever executor ran the study. ``report.md`` references PNG files in ``figures/``; ``report.html`` is
self-contained (inline CSS, images as data URIs) and renders every dataset string through Jinja2's autoescaping.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from ..errors import SilverlabelError
from ..files import atomic_write_text
from ..paper import TABLE1, TABLE1_COLUMNS, TABLE2
from . import plots
from .conclusions import INTRO as CONCLUSIONS_INTRO
from .conclusions import conclusion_sections
from .multiverse import INTRO as SURVIVAL_INTRO
from .multiverse import survival_sections
from .text import markdown_env, pct, split_line, takeaways

log = logging.getLogger(__name__)

COLUMN_TITLES = {"acc": "acc", "macro_f1": "macro-F1", "alpha": "αK", "sd_acc": "σacc", "sd_f1": "σF1",
                 "p_unchanged": "p_uc"}
_METRIC_OF = {"acc": "accuracy_mean", "macro_f1": "macro_f1_mean", "alpha": "krippendorff_alpha",
              "sd_acc": "accuracy_std", "sd_f1": "macro_f1_std", "p_unchanged": "p_unchanged"}


_pct = pct  # percent with two decimals, "n/a" for a missing value


def _plateau_text(p: dict, largest: int):
    if p["plateau_size"] is not None:
        return p["plateau_size"]
    if largest in p.get("one_class_sizes", []):
        return f"none: one class predicted up to {largest}"
    if p.get("one_class_sizes"):
        return f"none up to {largest} (one class predicted at {', '.join(map(str, p['one_class_sizes']))})"
    return f"none up to {largest}"


COLLAPSED = "‡"
COLLAPSED_NOTE = (f"{COLLAPSED} every run predicted one class for every test item: its αK and p_uc of 100 mean "
                  "collapse, not stability.")


def table1_rows(sources, *, intervals: bool = False) -> list[dict]:
    """Rows of Table 1 in percent strings, in the paper's column order, plus the teacher's own accuracy."""
    rows = []
    for s in sources:
        s = s if isinstance(s, dict) else s.__dict__
        row = {"labels": s["label_source"] + (f" {COLLAPSED}" if s.get("one_class") else ""),
               "teacher_acc": _pct(s.get("teacher_accuracy")), "n_train": s["n_train"]}
        for col, metric in _METRIC_OF.items():
            row[col] = _pct(s[metric])
            ci = (s.get("ci") or {}).get(metric) if intervals else None
            if ci:
                row[col] += f" [{_pct(ci[0])}, {_pct(ci[1])}]"
        rows.append(row)
    return rows


def gold_spent(row: dict) -> int:
    """Gold labels a label source trained on: all of them for gold, none for a teacher, the policy's count for a
    mitigation (Table 2's missing column: the paper does not report it)."""
    if row["kind"] == "gold":
        return int(row["n_train"])
    return int((row.get("accounting") or {}).get("gold_used", 0))


def paper_rows(dataset: str | None) -> list[dict]:
    return [{"labels": f"paper: {name}", **{c: f"{v:.2f}" for c, v in zip(TABLE1_COLUMNS, values)},
             "teacher_acc": "", "n_train": 5000} for name, values in TABLE1.get(dataset or "", [])]


MITIGATION_COLUMNS = ["label_source", "gold_used", "teacher_calls", "errors_caught_precision",
                      "errors_caught_recall", "noise_rate"]


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _dataset_section(name: str, info: dict, results: dict, figures: Path) -> dict:
    rows = [r for r in results["results"] if r["dataset"] == name]
    students = list(dict.fromkeys(r["student"] for r in rows))
    largest = max((r["size"] for r in rows), default=0)  # no rows: a study of teachers only (hypotheses, estimates)
    sizes = sorted({r["size"] for r in rows})
    tables = []
    for student in students:
        top = [r for r in rows if r["student"] == student and r["size"] == largest]
        tables.append({"student": student, "rows": table1_rows(top, intervals=True),
                       "collapsed": any(r.get("one_class") for r in top)})
    paper = paper_rows(info.get("paper_dataset"))
    slug = "".join(ch if ch.isalnum() else "-" for ch in name)
    figs = {}
    top_rows = [r for r in rows if r["student"] == students[0] and r["size"] == largest] if rows else []
    names = info["label_names"]
    support = info["test_class_counts"]
    rare_first = sorted(names, key=lambda n: (support.get(n, 0), names.index(n)))
    per_class_rows = [{"labels": r["label_source"], **{n: _pct((r["per_class"].get(n) or {}).get("f1"))
                                                         for n in rare_first}} for r in top_rows]
    if top_rows:
        path = figures / f"{slug}-per-class-f1.png"
        plots.per_class_f1(top_rows, rare_first, support, path)
        figs["per_class"] = path
    scaling = None
    if len(sizes) > 1:
        path = figures / f"{slug}-scaling.png"
        plateaus = [p for p in results["plateaus"] if p["dataset"] == name and p["student"] == students[0]]
        plots.scaling(rows, students[0], plateaus, path)
        figs["scaling"] = path
        scaling = {"sizes": sizes, "plateaus": [{**p, "plateau": _plateau_text(p, max(sizes))} for p in plateaus]}
    teachers = []
    for t in results["teachers"]:
        if t["dataset"] != name:
            continue
        path = figures / f"{slug}-{t['teacher']}-d{t['demo_seed']}-confusion.png".replace("/", "-")
        plots.confusion(t["confusion"], path, title=f"{t['teacher']} (demos {t['demo_seed']}) vs gold, training "
                                                       "texts")
        figs[f"confusion:{t['teacher']}:{t['demo_seed']}"] = path
        entry = {**t, "figure": path}
        if t.get("divergence"):
            import pandas as pd

            from ..metrics.divergence import Calibration
            from .teacher_plots import reliability_diagram

            cal = Calibration(ece=t["divergence"]["ece"], bins=pd.DataFrame(t["divergence"]["reliability"]))
            entry["reliability_figure"] = figures / path.name.replace("-confusion.png", "-reliability.png")
            reliability_diagram(cal, title=f"{t['teacher']} calibration on {t['train_items']} gold labels",
                                path=entry["reliability_figure"])
            figs[f"reliability:{t['teacher']}:{t['demo_seed']}"] = entry["reliability_figure"]
        teachers.append(entry)
    mitigations = [r for r in rows if r["kind"] == "mitigation" and r["student"] == students[0]
                   and r["size"] == largest]
    budget = None
    if mitigations:
        path = figures / f"{slug}-budget.png"
        plots.budget_curves([r for r in rows if r["student"] == students[0] and r["size"] == largest], path)
        figs["budget"] = path
        budget_sources = [r for r in rows if r["student"] == students[0] and r["size"] == largest
                          and r["kind"] != "mitigation"] + mitigations
        budget = {"rows": [{**row, "gold_used": gold_spent(src)} for row, src in
                           zip(table1_rows(budget_sources, intervals=True), budget_sources)],
                  "collapsed": any(r.get("one_class") for r in budget_sources), "paper": [
            {"labels": f"paper: {name}", **{c: f"{v:.2f}" for c, v in zip(TABLE1_COLUMNS, values)},
             "teacher_acc": "", "n_train": 5000, "gold_used": "not stated"}
            for name, values in TABLE2.get(info.get("paper_dataset") or "", [])]}
    for t in teachers:
        t["confusion_columns"] = plots.confusion_columns(t["confusion"])
        t["confusion_rows"] = [{"gold": g, **row} for g, row in t["confusion"].items()]
    mitigation_rows = [{"label_source": r["label_source"], **{k: r["accounting"].get(k, "") for k in
                                                              MITIGATION_COLUMNS[1:]}} for r in mitigations]
    for r in mitigation_rows:
        for k in MITIGATION_COLUMNS[3:]:
            r[k] = _pct(r[k]) if isinstance(r[k], (int, float)) or r[k] is None else r[k]
    return {"name": name, "info": info, "takeaways": takeaways(rows), "mitigation_rows": mitigation_rows,
            "per_class_titles": {"labels": "labels", **{n: f"{n} (n={support[n]})" for n in rare_first}},
            "split_line": split_line(info["split"], info["test_class_counts"]), "tables": tables, "paper": paper,
            "largest": largest, "students": students,
            "rare_first": rare_first, "support": support, "per_class_rows": per_class_rows, "scaling": scaling,
            "teachers": teachers, "figures": figs, "mitigations": mitigations, "budget": budget}


def write_study_report(out: str | Path) -> dict[str, Path]:
    """Write report.md, report.html and figures/ for the study in ``out`` (from its results.json)."""

    out = Path(out)
    path = out / "results.json"
    if not path.exists():
        raise SilverlabelError(f"{out}: no results.json; run `silverlabel study run CONFIG --out {out}` first")
    results = json.loads(path.read_text(encoding="utf-8"))
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    sections = [_dataset_section(name, info, results, figures) for name, info in results["datasets"].items()]
    columns = ["labels", *TABLE1_COLUMNS, "teacher_acc", "n_train"]
    titles = {"labels": "labels", **COLUMN_TITLES, "teacher_acc": "teacher acc", "n_train": "n_train"}
    md_path, html_path = out / "report.md", out / "report.html"
    conclusions = conclusion_sections(results, figures)  # "What you can conclude" (reporting/conclusions.py)
    survival = survival_sections(results, figures)  # "Do the conclusions survive?" (reporting/multiverse.py)
    md = markdown_env().get_template("report.md.j2").render(
        results=results, sections=sections, columns=columns, titles=titles, conclusions=conclusions,
        conclusions_intro=CONCLUSIONS_INTRO, survival=survival, survival_intro=SURVIVAL_INTRO,
        collapsed_note=COLLAPSED_NOTE,
        budget_titles={**titles, "gold_used": "gold"}, mitigation_columns=MITIGATION_COLUMNS,
        config_json=json.dumps(results["config"], indent=2), versions=results.get("versions", {}),
        timing=results.get("timing", {}))
    atomic_write_text(md_path, md)
    env = Environment(loader=PackageLoader("silverlabel.reporting", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default=True))
    images = {str(p): _data_uri(p) for s in sections for p in s["figures"].values()}
    images.update({str(c["figure"]): _data_uri(c["figure"]) for c in conclusions if c["figure"]})
    images.update({str(s["figure"]): _data_uri(s["figure"]) for s in survival})
    html = env.get_template("report.html.j2").render(
        results=results, sections=sections, columns=columns, titles=titles, images=images, pct=_pct,
        collapsed_note=COLLAPSED_NOTE, confusion_columns=plots.confusion_columns, conclusions=conclusions,
        conclusions_intro=CONCLUSIONS_INTRO, survival=survival, survival_intro=SURVIVAL_INTRO,
        config_json=json.dumps(results["config"], indent=2), versions=results.get("versions", {}),
        timing=results.get("timing", {}))
    atomic_write_text(html_path, html)
    return {"markdown": md_path, "html": html_path}
