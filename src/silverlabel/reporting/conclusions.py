"""The report's "What you can conclude" section (from ``results["estimates"]``, see silverlabel.conclusions):
per dataset every method's estimate and interval beside the truth, and a plot of interval width against gold
labels (the pilot's expected curves, the measured widths as points)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..conclusions import width_curve
from ..inference import METHOD_TITLES
from .text import markdown_env

INTRO = ("Each interval is at the stated level. \"teacher as truth\" treats the teacher's labels as the answer "
         "(what people do today), so it is narrow and usually misses the truth; gold only and PPI++ are valid "
         "whatever the teacher's errors, and PPI++ is narrower when the teacher is informative. The truth is "
         "computed from the gold labels of all the items; \"covers\" says whether the interval holds it.")


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4f}"


def conclusion_sections(results: dict, figures: Path) -> list[dict]:
    """Rows and a figure per (estimates entry, dataset)."""
    out = []
    for e in results.get("estimates") or []:
        rows = []
        for by in e["by_size"]:
            for r in by["table"]:
                t = e["truth"].get(r["parameter"])
                rows.append({"gold": by["n_gold"], "parameter": r["parameter"], "method": METHOD_TITLES[r["method"]],
                             "estimate": _fmt(r["estimate"]), "interval": f"[{_fmt(r['lower'])}, {_fmt(r['upper'])}]",
                             "truth": _fmt(t), "covers": "" if t is None else
                             ("yes" if r["lower"] <= t <= r["upper"] else "no"),
                             "worth": "" if r.get("effective_n") is None else f"{r['effective_n']:.0f}"})
        slug = "".join(ch if ch.isalnum() else "-" for ch in f"{e['dataset']}-{e['index']}")
        path = figures / f"{slug}-gold-power.png"
        if e.get("power"):
            width_plot(e, path)
        power = [{"parameter": p["parameter"], "half_width": f"{p['half_width']:g}", "classical": p["classical"],
                  "ppi_teacher": p["ppi_teacher"], "ppi_student": "" if p["ppi_student"] is None else p["ppi_student"]}
                 for p in e.get("power") or []]
        out.append({**e, "rows": rows, "power_rows": power, "figure": path if e.get("power") else None,
                    "title": f"{e['dataset']}: {e.get('title') or e['estimand']}"})
    return out


def width_plot(e: dict, path: Path) -> None:
    """Interval width against gold labels for the first parameter (the rarest class first for prevalence is not
    assumed: the parameters in their order, one line style per method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = np.unique(np.geomspace(10, max(e["population"] / 2, 20), 40).astype(int))
    fig, axes = plt.subplots(1, len(e["power"]), figsize=(4.2 * len(e["power"]), 3.4), squeeze=False)
    colors = {"classical": "#4c72b0", "ppi_teacher": "#dd8452", "ppi_student": "#55a868"}
    for ax, p in zip(axes[0], e["power"]):
        curves = width_curve(p, sizes, level=e["level"], population=e["population"])
        for key, ys in curves.items():
            ax.plot(sizes, ys, color=colors[key], label=f"{METHOD_TITLES[key]} (pilot)")
        for by in e["by_size"]:
            for r in by["table"]:
                if r["parameter"] == p["parameter"] and r["method"] in colors:
                    ax.plot(by["n_gold"], r["width"], "o", color=colors[r["method"]], ms=5)
        ax.axhline(2 * p["half_width"], color="grey", ls=":", lw=1)
        ax.set(xscale="log", xlabel="gold labels", ylabel=f"{100 * e['level']:g} % interval width",
               title=p["parameter"])
    axes[0][0].legend(frameon=False, fontsize=7)
    fig.suptitle(f"{e['dataset']}: width against gold labels (dots: measured; dotted: target)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def conclusions_markdown(sections: list[dict]) -> list[str]:
    """The "What you can conclude" part of report.md, as lines (templates/conclusions.md.j2)."""
    text = markdown_env().get_template("conclusions.md.j2").render(conclusions=sections, conclusions_intro=INTRO)
    return text.split("\n")[:-1] if text else []
