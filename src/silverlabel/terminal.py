"""What the commands print to the terminal: Table 1, a study's summary and plan, the teacher against gold, and
evaluations, as rich tables that fit a narrow terminal. The CLI only parses arguments and calls the library;
everything it shows is drawn here."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .multiverse import DECISIONS
from .teachers.base import P_S_METHODS

console = Console()


def print_table1(results: list[dict], *, title: str) -> None:
    """Table 1 in percent; fits 80 columns (light rules, long label names wrap, headers are never cut), with the
    meaning of ‡ under it when a row carries it."""
    from rich import box

    from .reporting import COLLAPSED_NOTE, table1_rows

    rows = table1_rows(results)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("labels", "acc", "macro-F1", "αK", "σacc", "σF1", "p_uc", "teacher\nacc", "n_train"):
        table.add_column(col, justify="left" if col == "labels" else "right", overflow="fold",
                         min_width=max(map(len, col.split())))
    for r in rows:
        table.add_row(r["labels"], r["acc"], r["macro_f1"], r["alpha"], r["sd_acc"], r["sd_f1"], r["p_unchanged"],
                      r["teacher_acc"], str(r["n_train"]))
    console.print(table)
    if any(r.get("one_class") for r in results):
        console.print(COLLAPSED_NOTE, highlight=False)


def print_study(results: dict, out: Path) -> None:
    for name, info in results["datasets"].items():
        rows = [r for r in results["results"] if r["dataset"] == name]
        largest = max((r["size"] for r in rows), default=0)  # none: a study of teachers only
        for student in dict.fromkeys(r["student"] for r in rows):
            print_table1([r for r in rows if r["size"] == largest and r["student"] == student],
                         title=f"Table 1 — {name} ({'real data' if info['real_data'] else 'offline stand-in'}), "
                               f"student {student}, {largest} training items")
        from .reporting.text import takeaways

        for line in takeaways(rows):
            console.print(line, highlight=False)
        for t in results["teachers"]:
            if t["dataset"] == name:
                console.print(f"teacher {t['teacher']} ({t['uri']}, demos {t['demo_seed']}): accuracy {100 * (t['accuracy'] or 0):.1f} % "
                              f"on {t['train_items']} training texts ({t['this_run']['cached']} of {t['items']} "
                              "labels from the cache)")
    if results.get("hypotheses"):
        print_hypotheses(results["hypotheses"])
    timing = results["timing"]
    console.print(f"wall time {timing['wall_s']:.0f} s ({timing['runs_trained']} student runs trained, runner "
                  f"overhead {100 * timing['overhead_share']:.1f} %)")
    console.print(f"report: {out / 'report.html'} and {out / 'report.md'}; numbers in {out / 'results.json'}")


def print_plan(plan, name: str, hypotheses=()) -> None:
    blocked = len(plan.cells) - plan.runnable
    for h in hypotheses:
        console.print(f"hypothesis {h.name}: {h.estimand_object().describe()}, decided by every configuration of "
                      f"{', '.join(h.teachers) or 'every teacher'} (gold samples of {h.gold_size}, {h.draws} draws)",
                      highlight=False)
    table = Table(title=f"study {name}: {len(plan.cells)} runs, {sum(plan.done)} done"
                        + (f", {blocked} cannot run" if blocked else ""))
    for col in ("dataset", "labels", "student", "size", "seed", "run id", "done"):
        table.add_column(col)
    for cell, done in zip(plan.cells, plan.done):
        table.add_row(cell.dataset, cell.source.name, cell.student, str(cell.size), str(cell.seed),
                      cell.run_id or "cannot run (below)", "yes" if done else "")
    console.print(table)
    for key, n in plan.annotate_items.items():
        console.print(f"teacher labels {key}: {n} items to annotate")
    for dataset, reason in plan.blocked.items():
        console.print(f"cannot run: {reason}", highlight=False, soft_wrap=True, markup=False)
    console.print(f"work left: {plan.pending} student runs, {plan.training_steps} training steps, "
                  f"{sum(plan.annotate_items.values())} items to annotate"
                  + (f"; {blocked} runs of {len(plan.blocked)} datasets cannot run "
                     "(study run refuses the grid until they can)" if plan.blocked else ""))


def money(value) -> str:
    return "n/a (no price set)" if value is None else f"{value:.4f}"


def print_spend_estimate(spend: dict, cached: int) -> None:
    """A hosted teacher's dry run: what the uncached items would cost at the teacher's prices."""
    share = 1 - cached / spend["items"] if spend["items"] else 0.0
    console.print(f"estimated spend ({spend['method']}, prompt tokens by {spend['counted_by']}): "
                  f"{spend['requests']} requests, {spend['prompt_tokens']} prompt tokens, at most "
                  f"{spend['completion_tokens']} output tokens, cost {money(spend['cost'])} for all items; "
                  f"{money(None if spend['cost'] is None else spend['cost'] * share)} for the "
                  f"{spend['items'] - cached} not cached", highlight=False, soft_wrap=True)
    if spend.get("batch") and spend.get("synchronous_cost") is not None:
        console.print(f"those are batch prices (batch=true); without batch: {money(spend['synchronous_cost'])} for all "
                      f"items, {money(spend['synchronous_cost'] * share)} for the not cached", highlight=False,
                      soft_wrap=True)


def print_batches(rows, now: float) -> None:
    """The provider batches an annotation store records (``silverlabel batches``)."""
    table = Table(title="provider batches (batch=true)")
    for col in ("batch", "model", "status", "requests", "done", "failed", "age", "results read"):
        table.add_column(col, no_wrap=col != "model", overflow="fold")
    for r in rows:
        age = now - r.created
        table.add_row(r.batch_id, r.model, r.status, str(r.requests), str(r.done), str(r.failed),
                      f"{age / 3600:.1f} h" if age >= 3600 else f"{age / 60:.0f} min",
                      "yes" if r.results_read else "no")
    console.print(table)


def print_annotation_summary(s, teacher: str) -> None:
    """How P_S was made and what it cost, then the teacher against gold as a table: the confusion matrix with its
    totals, accuracy and macro-F1."""
    methods = s.p_s_methods or {}
    if methods:
        seen = "" if s.min_observed is None or s.min_observed >= 1 else \
            f"; the least share of an item's P_S mass the server's numbers covered: {s.min_observed:.3f}"
        console.print(f"P_S made by {', '.join(f'{m} ({n} items)' for m, n in methods.items())}{seen}",
                      highlight=False, soft_wrap=True)
        estimated = [m for m in methods if P_S_METHODS.get(m)]
        if estimated:
            console.print(f"warning: P_S by {', '.join(estimated)} is an estimate, not the model's own "
                          "probabilities: check its calibration (ECE, in a study's report) before a mitigation, "
                          "KL or PPI relies on it", highlight=False, soft_wrap=True)
    if s.cost is not None or s.table_cost is not None or s.requests:
        console.print(f"cost: {money(s.cost)} this run ({s.requests} requests, {s.completion_tokens} output tokens); "
                      f"{money(s.table_cost)} for the whole table ({s.prompt_tokens} prompt tokens)",
                      highlight=False, soft_wrap=True)
    names = list(s.label_counts)
    if s.confusion is not None:
        matrix = Table(title=f"teacher {teacher} vs gold: accuracy {100 * s.accuracy:.1f} %, macro-F1 "
                             f"{100 * s.macro_f1:.1f} %\nconfusion (rows: gold, columns: teacher; failed items "
                             "not counted)")
        matrix.add_column("gold \\ teacher")
        for n in names:
            matrix.add_column(n, justify="right")
        matrix.add_column("gold total", justify="right")
        for n, row in zip(names, s.confusion):
            matrix.add_row(n, *[str(v) for v in row], str(sum(row)))
        matrix.add_row("teacher total", *[str(s.label_counts[n]) for n in names], "")
        console.print(matrix)


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def print_evaluation(ev: dict, *, title: str) -> None:
    table = Table(title=f"{title}: {ev['n_runs']} runs x {ev['n_items']} items (percent; σ with ddof=1)")
    for col in ("acc", "σacc", "macro-F1", "σF1", "αK", "p_uc", "churn"):
        table.add_column(col, justify="right")
    table.add_row(pct(ev["accuracy_mean"]), pct(ev["accuracy_std"]), pct(ev["macro_f1_mean"]),
                  pct(ev["macro_f1_std"]), pct(ev["krippendorff_alpha"]), pct(ev["p_unchanged"]),
                  pct(ev["pairwise_churn"]))
    console.print(table)
    per = Table(title="per class (precision/recall/F1 averaged over runs)")
    for col in ("label", "precision", "recall", "F1", "support", "p_uc"):
        per.add_column(col, justify="left" if col == "label" else "right")
    for label, s in ev["per_class"].items():
        per.add_row(label, pct(s["precision"]), pct(s["recall"]), pct(s["f1"]), str(s["support"]),
                    pct(s["p_unchanged"]))
    console.print(per)


def print_groups(groups, by: list[str], *, title: str) -> None:
    """One row per group (dataset, label source, student, size), in percent; a grouping value shared by every
    group goes to the title, so the table fits a narrow terminal."""
    from rich import box

    shared = {c: groups[0].key[c] for c in by if len(groups) > 1 and len({str(g.key[c]) for g in groups}) == 1}
    varying = [c for c in by if c not in shared]
    where = "".join(f", {c} {v}" for c, v in shared.items())
    table = Table(title=f"{title}: {len(groups)} groups{where} (percent; σ with ddof=1)", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True)
    for col in varying:
        table.add_column({"label_source": "labels"}.get(col, col), overflow="fold")
    for col in ("runs", "acc", "σacc", "macro-F1", "σF1", "αK", "p_uc", "churn"):
        table.add_column(col, justify="right", min_width=len(col))
    for g in groups:
        ev = g.evaluation.to_dict()
        table.add_row(*[str(g.key[c]) for c in varying], str(ev["n_runs"]), pct(ev["accuracy_mean"]),
                      pct(ev["accuracy_std"]), pct(ev["macro_f1_mean"]), pct(ev["macro_f1_std"]),
                      pct(ev["krippendorff_alpha"]), pct(ev["p_unchanged"]), pct(ev["pairwise_churn"]))
    console.print(table)


def print_predict_summary(s) -> None:
    """One line: texts, what was skipped and why, the unstable share, label counts, where it went."""
    skipped = (f", {sum(s.skipped.values())} skipped (" + ", ".join(f"{r}: {n}" for r, n in s.skipped.items())
               + ")") if s.skipped else ""
    labels = ", ".join(f"{k} {v}" for k, v in sorted(s.label_counts.items(), key=lambda kv: -kv[1]))
    resumed = f"; resumed after {s.resumed_chunks} chunk(s)" if s.resumed_chunks else ""
    rate = f", {s.texts_per_s:.0f} texts/s predicting" if s.texts_per_s else ""
    console.print(f"predict: {s.texts} texts, {s.predicted} predicted{skipped}; unstable (seeds disagree) "
                  f"{100 * s.unstable_share:.1f} % ({s.unstable}); labels: {labels or 'none'} -> {s.out} "
                  f"({s.seconds:.1f} s{rate}{resumed})", markup=False, highlight=False, soft_wrap=True)


def print_estimates(est, *, source: str | None = None) -> None:
    """``silverlabel estimate``: every method's interval per parameter, and the power analysis when asked."""
    from .inference import METHOD_TITLES

    title = (f"{est.title}: {est.n_gold} gold of {est.n_items} items ({est.design} sample), "
             f"{100 * est.level:g} % intervals" + (f" — {source}" if source else ""))
    table = Table(title=title)
    for col in ("parameter", "method", "estimate", "interval", "width", "worth n gold"):
        table.add_column(col, justify="left" if col in ("parameter", "method") else "right")
    for r in est.table().to_dict(orient="records"):
        ess = "" if r["effective_n"] is None or r["effective_n"] != r["effective_n"] else f"{r['effective_n']:.0f}"
        table.add_row(r["parameter"], METHOD_TITLES[r["method"]], f"{r['estimate']:.4f}",
                      f"[{r['lower']:.4f}, {r['upper']:.4f}]", f"{r['width']:.4f}", ess)
    console.print(table)
    console.print("teacher as truth: an interval around the teacher's own labels, not valid whenever the teacher "
                  "errs; worth n gold = n x (classical width / PPI width)^2")
    if est.power:
        power = Table(title=f"gold labels needed for a half-width of {est.power[0].half_width:g} "
                            f"({100 * est.level:g} %), from this pilot of {est.n_gold}")
        for col in ("parameter", "gold only", "PPI++ teacher", "PPI++ student", "rho teacher"):
            power.add_column(col, justify="left" if col == "parameter" else "right")
        for p in est.power:
            power.add_row(p.parameter, str(p.classical), str(p.ppi_teacher),
                          "" if p.ppi_student is None else str(p.ppi_student),
                          "" if p.ppi_corr_teacher is None else f"{p.ppi_corr_teacher:.3f}")
        console.print(power)


_SIGNS = {"+": "+", "-": "−", "0": "0", None: "—"}


def print_hypotheses(results: list[dict]) -> None:
    """Each hypothesis decided by every configuration: teacher as truth and PPI++ side by side, against the
    reference, and how far a choice of configuration could push the estimate."""
    for h in results:
        ref = h["reference"]
        shown = (f"{DECISIONS[ref['decision']]}, {_cell(ref)} from {ref['n']} gold labels"
                 if ref["decision"] is not None else ref["source"])
        table = Table(title=f"{h.get('dataset', '') + ': ' if h.get('dataset') else ''}{h['name']} — {h['title']}; "
                            f"{h['parameter']} vs {h['null']:g}, {100 * h['level']:g} % two-sided; reference "
                            f"{shown}")
        for col in ("configuration", "teacher as truth", "PPI++ (1st gold draw)", "gold only"):
            table.add_column(col, justify="left" if col == "configuration" else "right")
        for r in h["configurations"]:
            first = r["draws"][0]
            table.add_row(r["name"], _cell(r["teacher"]), _cell(first["ppi_teacher"]),
                          _SIGNS[first["classical"]["decision"]])
        console.print(table)
        console.print("decision: + / − significant with that sign, 0 not significant; I, II, S: the error it makes "
                      "against the reference", style="dim")
        rng = h["range"]
        console.print("by choosing a configuration: " + "; ".join(
            f"{name} {_num(rng[m]['low'])} to {_num(rng[m]['high'])} "
            f"({', '.join(DECISIONS[d] for d in rng[m]['decisions'])})"
            for m, name in (("teacher", "teacher as truth"), ("ppi_teacher", "PPI++"))))
        errs = "; ".join(f"{m}: Type I {e['type_I']:.0%}, II {e['type_II']:.0%}, S {e['type_S']:.0%}"
                         for m, e in h["errors"].items() if m != "classical")
        console.print(f"errors over {len(h['configurations'])} configurations x {h['draws']} gold draws: {errs}")


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _cell(d: dict) -> str:
    err = d.get("error")
    shown = "no estimate" if d["estimate"] is None else f"{d['estimate']:.3f} [{d['lower']:.3f}, {d['upper']:.3f}]"
    return f"{shown} {_SIGNS[d['decision']]}" + (f" {err.removeprefix('type_')}" if err else "")
