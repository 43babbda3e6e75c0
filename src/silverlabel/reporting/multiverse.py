"""The report's "Do the conclusions survive?" section (from ``results["hypotheses"]``, see silverlabel.multiverse):
per hypothesis a forest plot of every configuration's interval by teacher as truth and by PPI++ (the first gold
draw) with the gold reference as a band, the share of decisions with each error type per method, how far a choice
of configuration pushes the estimate, and which configurations disagree with the reference."""

from __future__ import annotations

from pathlib import Path

from ..inference import METHOD_TITLES
from ..multiverse import DECISIONS
from .text import markdown_env

INTRO = ("Each hypothesis is tested two-sided against its null value by every teacher configuration (teacher x "
         "instruction x demonstrations), once with the teacher's labels taken as truth and once with PPI++ on a "
         "uniform gold sample (drawn several times; the same draws for every configuration). The reference decision "
         "is the classical test on the gold labels of all the items. Type I: significant where the reference is not; "
         "Type II: not significant where it is; Type S: significant with the wrong sign. Shares are over "
         "configurations x gold draws. A fit with no estimate (a logistic regression of labels all of one class, or a "
         "singular PPI++ fit) decides \"not significant\" and is counted.")


def _f(v) -> str:
    return "" if v is None else f"{v:.4f}"


def survival_sections(results: dict, figures: Path) -> list[dict]:
    """One section per (hypothesis, dataset): the error table, the range, the disagreements and the figure."""
    out = []
    for k, h in enumerate(results.get("hypotheses") or []):
        ref = h["reference"]
        errors = [{"method": METHOD_TITLES[m], "decisions": e["decisions"], "no_estimate": e.get("no_estimate", 0),
                   **{t: f"{100 * e[t]:.1f} %" for t in ("type_I", "type_II", "type_S", "any")}}
                  for m, e in h["errors"].items()]
        ranges = [{"method": METHOD_TITLES[m], "low": _f(r["low"]), "high": _f(r["high"]),
                   "decisions": ", ".join(DECISIONS[d] for d in r["decisions"])} for m, r in h["range"].items()]
        disagree = []
        for r in h["configurations"]:
            t, p = r["teacher"], r["ppi_teacher"]
            if r["name"] in h["disagree"]:
                disagree.append({"name": r["name"], "teacher": DECISIONS[t["decision"]],
                                 "teacher_error": (t["error"] or "").replace("type_", "Type "),
                                 "ppi": DECISIONS[p["decision"]],
                                 "ppi_errors": ", ".join(f"{e.replace('type_', 'Type ')} {100 * p[f'{e}_share']:.0f} %"
                                                         for e in ("type_I", "type_II", "type_S")
                                                         if p[f"{e}_share"] > 0) or "none"})
        slug = "".join(ch if ch.isalnum() else "-" for ch in f"{h.get('dataset', 'data')}-{k}-{h['name']}")
        path = figures / f"{slug}-forest.png"
        forest_plot(h, path)
        out.append({**h, "errors_rows": errors, "range_rows": ranges, "disagree_rows": disagree, "figure": path,
                    "reference_text": (f"{DECISIONS[ref['decision']]}: {_f(ref['estimate'])} "
                                       f"[{_f(ref['lower'])}, {_f(ref['upper'])}] from {ref['n']} gold labels"
                                       if ref.get("decision") else ref["source"]),
                    "heading": f"{h.get('dataset', '')}: {h['name']}".lstrip(": ")})
    return out


def forest_plot(h: dict, path: Path) -> None:
    """Intervals of every configuration: teacher as truth (circles) and PPI++ with the first gold draw
    (squares), the reference's interval as a grey band, the null value dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = h["configurations"]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.42 * len(rows)))
    ref = h["reference"]
    if ref.get("decision") is not None:
        ax.axvspan(ref["lower"], ref["upper"], color="#bbbbbb", alpha=0.5, lw=0, label="all gold (reference)")
        ax.axvline(ref["estimate"], color="#888888", lw=1)
    ax.axvline(h["null"], color="black", ls="--", lw=1, label=f"null ({h['null']:g})")
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        for dy, d, style, color, label in ((0.15, r["teacher"], "o", "#c44e52", "teacher as truth"),
                                           (-0.15, r["draws"][0]["ppi_teacher"], "s", "#4c72b0", "PPI++ (1st draw)")):
            if d["estimate"] is None:  # no estimate (a logistic fit of one class): nothing to draw
                continue
            ax.errorbar(d["estimate"], y + dy, xerr=[[d["estimate"] - d["lower"]], [d["upper"] - d["estimate"]]],
                        fmt=style, color=color, ms=4, capsize=2, lw=1.2, label=label if i == 0 else None)
    ax.set_yticks(range(len(rows)), [r["name"] for r in reversed(rows)], fontsize=7)
    ax.set_xlabel(f"{h['parameter']} ({100 * h['level']:g} % intervals)")
    ax.set_title(f"{h.get('dataset', '')} {h['name']}: {h['title']}", fontsize=8)
    ax.legend(frameon=False, fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def survival_markdown(sections: list[dict]) -> list[str]:
    """The "Do the conclusions survive?" part of report.md, as lines (templates/multiverse.md.j2)."""
    text = markdown_env().get_template("multiverse.md.j2").render(survival=sections, survival_intro=INTRO)
    return text.split("\n")[:-1] if text else []
