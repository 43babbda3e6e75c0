"""A finished study summarised: one row per (dataset, student, label source, training size) with bootstrap
intervals, the teachers' accuracy and cost, and the plateau of every scaling curve. ``results.json`` holds it;
the report is drawn from it and from the Parquet tables beside it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import PRESETS
from .files import atomic_write_parquet
from .metrics import (
    PLATEAU_METHOD,
    accuracy,
    bootstrap_intervals,
    detect_plateau,
    evaluate_table,
    macro_f1,
)
from .paper import TABLE1
from .teachers.base import P_S_METHODS


def teacher_stats(frame: pd.DataFrame, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, confusion (gold rows and teacher columns in one order, rarest gold class first, so the
    diagonal is the correct labels; failed calls last) and cost of one teacher on the training texts."""
    train = frame[frame["split"] == "train"]
    labelled = train["label"].fillna("(failed)").to_numpy()
    gold = train["gold"].to_numpy()
    counts = train["gold"].value_counts()
    rare_first = sorted(label_names, key=lambda n: (counts.get(n, 0), label_names.index(n)))
    cols = [*rare_first, "(failed)"] if (labelled == "(failed)").any() else list(rare_first)
    confusion = {g: {c: int(((gold == g) & (labelled == c)).sum()) for c in cols} for g in rare_first}
    per_class_error = {g: (float((labelled[gold == g] != g).mean()) if (gold == g).any() else None)
                       for g in rare_first}
    from .metrics.divergence import calibration, kl_estimate

    cols = [f"p:{n}" for n in label_names]
    ok = train[cols].notna().all(axis=1).to_numpy() & train["gold"].isin(label_names).to_numpy()
    divergence = None
    if ok.sum() >= 2:
        probs = train.loc[ok, cols].to_numpy(np.float64)
        probs = probs / probs.sum(axis=1, keepdims=True)
        gold_index = train.loc[ok, "gold"].map({n: i for i, n in enumerate(label_names)}).to_numpy(np.int64)
        kl = kl_estimate(probs, gold_index, n_boot=1000, seed=0)
        cal = calibration(probs, gold_index, n_bins=10)
        divergence = {"kl": kl.to_dict(), "gold_needed_for_0.05_nats": kl.gold_needed(0.05),
                      "ece": float(cal.ece), "reliability": cal.bins.to_dict(orient="list")}
    methods = {str(m): int(c) for m, c in frame["p_s_method"].dropna().value_counts().items()} \
        if "p_s_method" in frame else {}
    costs = frame["cost"].dropna() if "cost" in frame else pd.Series(dtype=float)
    observed = frame["observed_mass"].dropna() if "observed_mass" in frame else pd.Series(dtype=float)
    return {"items": len(frame), "train_items": len(train), "divergence": divergence,
            "p_s_methods": methods, "p_s_estimated": sorted(m for m in methods if P_S_METHODS.get(m)),
            "hosted": any(m not in ("sequence", "guided") for m in methods),
            "min_observed": float(observed.min()) if len(observed) else None,
            "money": float(costs.sum()) if len(costs) else None,
            "accuracy": accuracy(gold, labelled) if len(train) else None,
            "macro_f1": macro_f1(gold, labelled, labels=label_names) if len(train) else None,
            "failed": int(frame["label"].isna().sum()), "prompt_tokens": int(frame["prompt_tokens"].sum()),
            "seconds": float(frame["seconds"].sum()), "label_counts": train["label"].value_counts().to_dict(),
            "confusion": confusion, "per_class_error": per_class_error, "model": str(frame["model"].iloc[0])}


def model_hashes(config) -> dict:
    """sha256 of every model the study used, where a file identifies it (shipped assets: their pinned hash; local
    files: hashed here); hub models are recorded by name only."""
    from pathlib import Path

    from .assets import GGUF_ASSETS, STUDENT_ASSETS, sha256_file
    from .teachers import parse_teacher_uri, redact_uri

    def file_hash(path: Path) -> str | None:
        return sha256_file(path) if path.is_file() else None

    out = {"teachers": {}, "students": {}}
    for t in config.teachers:
        backend, model = parse_teacher_uri(t.uri)
        asset = GGUF_ASSETS.get(model)
        out["teachers"][t.name] = {"uri": redact_uri(t.uri),
                                   "sha256": asset.sha256 if asset else file_hash(Path(model.split("#")[0]))}
        if asset and asset.engine_type and backend == "llamacpp":  # run as a dequantized copy (assets.py)
            out["teachers"][t.name]["runs_as"] = asset.engine_type
    for s in config.students:
        asset = STUDENT_ASSETS.get(s.model)
        weights = Path(s.model) / "model.safetensors"
        out["students"][s.name] = {"model": s.model,
                                   "sha256": asset.sha256 if asset else file_hash(weights)}
    return out


def summarise(config, out, prepared, cells, records, annotation_summaries, accounting) -> dict:
    """results.json's content, from the passes below; also writes the study's predictions.parquet (every run's
    test predictions in one table), which the rows are computed from."""
    predictions = collect_predictions(out, cells)
    datasets = _datasets(prepared)
    teachers = _teachers(records, annotation_summaries, datasets)
    rows = _rows(config, prepared, cells, records, predictions, accounting)
    spent = [t["money"] for t in teachers if t.get("money") is not None]
    return {"study": config.name, "config": config.to_dict(), "datasets": datasets, "teachers": teachers,
            "teacher_money": sum(spent) if spent else None,
            "models": model_hashes(config),
            "results": rows, "plateaus": _plateaus(prepared, rows), "plateau_method": PLATEAU_METHOD + (
                "; alpha has one value per size (runs are its coders), so its noise is the half-width of its "
                "bootstrap interval at the largest size instead of a standard error; a size at which every run "
                "predicts one class cannot start a plateau (that flat stretch is collapse)")}


def collect_predictions(out, cells) -> pd.DataFrame:
    """Every finished run's test predictions, written to ``out/predictions.parquet`` and returned."""
    # the run label is rewritten from the cell, so runs finished before it named the dataset match the new ones
    frames = [pd.read_parquet(out / "runs" / c.run_id / "predictions.parquet").assign(run=c.label)
              for c in cells]
    predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    atomic_write_parquet(predictions, out / "predictions.parquet")
    return predictions


def _datasets(prepared) -> dict:
    datasets = {}
    for name, prep in prepared.items():
        source = prep.spec.source
        datasets[name] = {
            "source": source, "provenance": prep.dataset.provenance.describe(),
            "real_data": prep.dataset.provenance.real, "label_names": list(prep.dataset.label_names),
            "paper_dataset": source if source in PRESETS and source in TABLE1 else None,
            "split": prep.splits.sizes(), "test_class_counts": {
                n: int((prep.splits.test.labels == i).sum()) for i, n in enumerate(prep.dataset.label_names)},
            "fingerprint": prep.dataset.fingerprint(), "task": prep.dataset.task}
    return datasets


def _teachers(records, annotation_summaries, datasets) -> list[dict]:
    """Each teacher table's quality on the training texts (teacher_stats), beside what this run's pass cost."""
    teachers = []
    for summary in annotation_summaries:
        frame = records[(summary["dataset"], summary["teacher"])][summary["demo_seed"]]
        stats = teacher_stats(frame, datasets[summary["dataset"]]["label_names"])
        teachers.append({"dataset": summary["dataset"], "teacher": summary["teacher"], "uri": summary["uri"],
                         "demo_seed": summary["demo_seed"], "this_run": {k: summary.get(k) for k in (
                             "items", "cached", "labelled", "failed", "seconds", "prompt_tokens", "requests",
                             "completion_tokens", "cost")}, **stats})
    return teachers


def _rows(config, prepared, cells, records, predictions, accounting) -> list[dict]:
    """One row per (dataset, student, label source, size): the seeds' evaluation with bootstrap intervals."""
    rows = []
    by_group: dict[tuple, list] = {}
    for c in cells:
        by_group.setdefault((c.dataset, c.student, c.source.name, c.size), []).append(c)
    for (dataset, student, source, size), group in by_group.items():
        frame = predictions[(predictions["dataset"] == dataset) & (predictions["student"] == student)
                            & (predictions["label_source"] == source) & (predictions["size"] == size)]
        table = frame[["item", "run", "pred", "gold"]]
        ev = evaluate_table(table, source=f"{dataset}/{source}/n{size}").to_dict()
        cell = group[0]
        row = {"dataset": dataset, "student": student, "label_source": source, "kind": cell.source.kind,
               "teacher": cell.source.teacher, "policy": cell.source.policy, "budget": cell.source.budget,
               "size": size, "n_test": ev["n_items"], "seeds": [c.seed for c in group],
               **{k: ev[k] for k in ("accuracy_mean", "accuracy_std", "macro_f1_mean", "macro_f1_std",
                                     "krippendorff_alpha", "p_unchanged", "pairwise_churn", "per_class")},
               "one_class": bool(frame["pred"].nunique() == 1),  # collapse: alpha 100 then means nothing
               "macro_f1_per_seed": list(ev["macro_f1_per_run"].values()),
               "accuracy_per_seed": list(ev["accuracy_per_run"].values()),
               "ci": bootstrap_intervals(table, n_boot=config.bootstrap, seed=0),
               "accounting": accounting.get((dataset, source, size), {})}
        if cell.source.teacher:
            main_seed = config.teacher_specs()[cell.source.teacher].demo_seeds[0]
            tr = records[(dataset, cell.source.teacher)][main_seed]
            tr = tr[tr["split"] == "train"].iloc[prepared[dataset].training_positions(size)]
            row["teacher_accuracy"] = accuracy(tr["gold"].to_numpy(), tr["label"].fillna("(failed)").to_numpy())
        else:
            row["teacher_accuracy"] = None
        row["n_train"] = int(row["accounting"].get("n_train", size))
        rows.append(row)

    return rows


def _plateaus(prepared, rows) -> list[dict]:
    """Where each scaling curve (macro-F1 and alpha against training size) stops rising."""
    plateaus = []
    for dataset in prepared:
        sizes = sorted({r["size"] for r in rows if r["dataset"] == dataset})
        if len(sizes) < 2:
            continue
        for student in {r["student"] for r in rows}:
            for source in dict.fromkeys(r["label_source"] for r in rows if r["dataset"] == dataset):
                curve = [r for r in rows if (r["dataset"], r["student"], r["label_source"]) == (dataset, student,
                                                                                                  source)]
                curve.sort(key=lambda r: r["size"])
                for metric, per_seed in (("macro_f1", lambda r: r["macro_f1_per_seed"]),
                                         ("krippendorff_alpha", lambda r: [r["krippendorff_alpha"]])):
                    values = [[v for v in per_seed(r) if v is not None] or [np.nan] for r in curve]
                    if metric == "krippendorff_alpha":  # one value per size: judge it against its bootstrap width
                        size = _alpha_plateau(curve)
                    else:
                        size = detect_plateau([r["size"] for r in curve], values)
                    collapsed = [r["size"] for r in curve if r.get("one_class")]
                    size = plateau_after_collapse(size, [r["size"] for r in curve], collapsed)
                    plateaus.append({"dataset": dataset, "student": student, "label_source": source,
                                     "metric": metric, "plateau_size": size, "sizes": [r["size"] for r in curve],
                                     "one_class_sizes": collapsed})
    return plateaus


def plateau_after_collapse(plateau: int | None, sizes: list[int], one_class: list[int]) -> int | None:
    """A flat stretch of students that all predict one class is collapse, not a plateau: the plateau starts at
    the first size after the last collapsed one, and there is none if the largest size collapsed."""
    if plateau is None or not one_class or plateau > max(one_class):
        return plateau
    later = [s for s in sizes if s > max(one_class)]
    return min(later) if later else None


def _alpha_plateau(curve: list[dict]) -> int | None:
    last = curve[-1]
    ci = last["ci"].get("krippendorff_alpha") if last["ci"] else None
    if last["krippendorff_alpha"] is None or ci is None:
        return None
    half = max((ci[1] - ci[0]) / 2, 0.005)
    plateau = None
    for r in reversed(curve[:-1]):
        if r["krippendorff_alpha"] is None or abs(r["krippendorff_alpha"] - last["krippendorff_alpha"]) > half:
            break
        plateau = r["size"]
    return plateau
