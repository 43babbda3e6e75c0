"""Gold labels from people: export the items a policy chose, and merge the labels people gave back.

``select`` needs no gold for ``random``, ``entropy``, ``ensemble`` (given the other runs' files), ``confident`` and
``soft``. ``learned`` needs gold while it chooses, so it runs in two rounds: without ``labels`` it exports its
validation sample (and any failed teacher calls); with the people's labels for those it fits its error model and
exports the rest of the budget. ``merge`` then takes every label file of both rounds.

Label Studio: ``select`` writes a task-import JSON (``data.text``, ``data.item``, the teacher's label as a
``predictions[].result`` of a choices control named ``label`` on ``text``) and the labelling config beside it;
``merge`` reads that project's JSON export back.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SilverlabelError
from ..files import read_table
from ..inference import estimate, planning_gold, read_gold
from ..sampling import INCLUSION_COLUMN, check_inclusion, draw, inclusion_probabilities
from . import policy_input, policy_spec, select, teacher_arrays
from .base import GoldOracle, resolve_budget

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "labelstudio"}


def read_annotations(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """A ``silverlabel annotate`` output and its label set (from the p:<label> columns, in order)."""

    frame = read_table(Path(path))
    names = [c[2:] for c in frame.columns if str(c).startswith("p:")]
    missing = [c for c in ("item", "text", "label") if c not in frame.columns]
    if missing or not names:
        what = f"column '{missing[0]}'" if missing else "p:<label> columns"
        raise SilverlabelError(f"{path}: no {what}; pass a `silverlabel annotate` output")
    frame = frame.assign(item=frame["item"].astype(str))
    frame["label"] = frame["label"].astype(object).where(frame["label"].notna(), None)
    for c in [f"p:{n}" for n in names] + (["entropy"] if "entropy" in frame else []):
        frame[c] = pd.to_numeric(frame[c])
    dup = frame["item"].duplicated()
    if dup.any():
        raise SilverlabelError(f"{path}: item '{frame['item'][dup].iloc[0]}' appears twice; items must be unique")
    teacher_arrays(frame, names, where=str(path))  # checks every teacher label is in the label set
    return frame, names


def read_human_labels(path: Path, *, label_names: Sequence[str]) -> pd.Series:
    """Item -> label from a CSV/JSONL (columns item, label; empty labels are skipped) or a Label Studio JSON
    export; any label outside ``label_names`` is an error naming the file, the item and the allowed labels."""

    path = Path(path)
    if not path.exists():
        raise SilverlabelError(f"{path}: no such file")
    rows: list[tuple[str, Any]]
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SilverlabelError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, list) and data and all(isinstance(t, dict) and "data" in t for t in data):
            rows = _label_studio_rows(data, path)
        else:
            rows = _table_rows(pd.DataFrame(data) if isinstance(data, list) else pd.DataFrame(), path)
    else:
        rows = _table_rows(read_table(path), path)
    allowed = set(label_names)
    out: dict[str, str] = {}
    for item, label in rows:
        if label not in allowed:
            raise SilverlabelError(f"{path}: item '{item}' has label '{label}', which is not one of the allowed "
                                   f"labels: {', '.join(label_names)}")
        if out.get(item, label) != label:
            raise SilverlabelError(f"{path}: item '{item}' is labelled both '{out[item]}' and '{label}'; keep one")
        out[item] = label
    if not out:
        log.warning("%s: no labelled items yet", path)
    return pd.Series(out, dtype=object, name="label")


def _table_rows(frame: pd.DataFrame, path: Path) -> list[tuple[str, Any]]:
    missing = [c for c in ("item", "label") if c not in frame.columns]
    if missing:
        raise SilverlabelError(f"{path}: no column '{missing[0]}'; human labels need columns item and label")
    rows = []
    for item, label in zip(frame["item"], frame["label"]):
        if label is None or (isinstance(label, float) and np.isnan(label)) or str(label).strip() == "":
            continue
        rows.append((str(item), str(label).strip()))
    return rows


def _label_studio_rows(tasks: list[dict], path: Path) -> list[tuple[str, Any]]:
    rows = []
    for task in tasks:
        item = (task.get("data") or {}).get("item")
        if item is None:
            raise SilverlabelError(f"{path}: task {task.get('id', '?')} has no data.item; export the Label Studio "
                                   "project that `silverlabel select` made")
        done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not done:
            continue
        choices = [c for r in done[-1].get("result") or [] for c in (r.get("value") or {}).get("choices") or []]
        if not choices:  # submitted, not skipped, yet no label: a silent skip here would lose the person's work
            raise SilverlabelError(f"{path}: item '{item}' (task {task.get('id', '?')}) was submitted without a "
                                   "choice; choose its label in Label Studio (or skip the task) and export again")
        if len(choices) > 1:
            raise SilverlabelError(f"{path}: item '{item}' has {len(choices)} choices ({', '.join(choices)}); "
                                   "one label per item")
        if choices:
            rows.append((str(item), choices[0]))
    return rows


def _oracle(records: pd.DataFrame, labels: Sequence[Path], label_names: Sequence[str]) -> GoldOracle | None:
    if not labels:
        return None
    human = merged_human_labels(records, labels, label_names=label_names)
    gold = [human.get(i) for i in records["item"]]
    return GoldOracle(gold, items=records["item"].tolist(), source=", ".join(str(p) for p in labels))


def merged_human_labels(records: pd.DataFrame, labels: Sequence[Path], *, label_names: Sequence[str]) -> pd.Series:
    """Labels of every file, checked against each other and against the annotations' items."""
    known = set(records["item"])
    out: dict[str, str] = {}
    for path in labels:
        for item, label in read_human_labels(path, label_names=label_names).items():
            if item not in known:
                raise SilverlabelError(f"{path}: item '{item}' is not in the annotations file")
            if out.get(item, label) != label:
                raise SilverlabelError(f"{path}: item '{item}' is labelled '{label}' here but '{out[item]}' in "
                                       "an earlier file; keep one")
            out[item] = label
    return pd.Series(out, dtype=object, name="label")


@dataclass
class Selected:
    """Items to send to people, one row each, and what they are for."""

    frame: pd.DataFrame  # item, text, label (empty, to fill), teacher_label, teacher_confidence, entropy, p:..., reason
    label_names: list[str]
    budget: int
    message: str


def select_items(annotations: Path, *, policy: str, budget: float | str, seed: int = 0,
                 ensemble: Sequence[Path] = (), labels: Sequence[Path] = (),
                 options: dict[str, Any] | None = None, design: str | None = None, floor: float = 0.1,
                 target_width: float | None = None, level: float = 0.9) -> Selected:
    """The items policy ``policy`` sends for gold within ``budget`` (less any already in ``labels``).

    With ``design`` (uniform or active, see :mod:`silverlabel.sampling`) the items are a probability sample
    instead, each with its ``inclusion_prob`` recorded, so the same gold labels serve a mitigation and
    :func:`silverlabel.inference.estimate`. With ``target_width`` the message adds how many gold labels that
    half-width needs (from ``labels`` as a pilot when given)."""
    records, names = read_annotations(annotations)
    if resolve_budget(budget, len(records)) == 0:
        raise SilverlabelError(f"--budget {budget} selects no items of {len(records)}; give a share above 0 or a "
                               "count of at least 1")
    if design is not None:
        return _design_sample(records, names, annotations, budget=budget, design=design, floor=floor, seed=seed,
                              labels=labels, target_width=target_width, level=level)
    others = [read_annotations(p)[0] for p in ensemble]
    oracle = _oracle(records, labels, names)
    spec = policy_spec(policy)
    done = np.zeros(len(records), dtype=bool) if oracle is None else np.array(
        [g is not None for g in oracle.audit()], dtype=bool)
    reason = np.full(len(records), "chosen", dtype=object)
    # the teacher's arrays are read from the records once, here
    ctx = policy_input(policy, records, label_names=names, budget=budget, oracle=oracle, seed=seed,
                       ensemble=others, options=options)
    if spec.needs_gold and oracle is None:
        from .learned import plan_validation

        first, val = plan_validation(ctx)
        reason[val] = "validation"
        chosen = np.zeros(len(records), dtype=bool)
        chosen[np.concatenate([first, val])] = True
        b = ctx.budget
        message = (f"round 1 of 2: {int(chosen.sum())} items for the '{policy}' policy's validation set (of a budget "
                   f"of {b}); label them, then run select again with --labels FILE for the rest")
    else:
        selection, b = select(policy, ctx), ctx.budget
        chosen = selection.chosen & ~done
        message = f"{int(chosen.sum())} items chosen by '{policy}' for gold (budget {b}"
        message += f", {int((selection.chosen & done).sum())} already labelled)" if done.any() else ")"
    failed = ctx.failed
    reason[chosen & failed] = "failed teacher call"
    sub = records[chosen]
    probs = sub[[f"p:{n}" for n in names]]
    frame = pd.DataFrame({"item": sub["item"], "text": sub["text"], "label": "", "teacher_label": sub["label"],
                          "teacher_confidence": probs.max(axis=1), "entropy": sub.get("entropy"),
                          **{c: probs[c] for c in probs.columns}, "reason": reason[chosen]}).reset_index(drop=True)
    return Selected(frame=frame, label_names=names, budget=b, message=message)


def _design_sample(records: pd.DataFrame, names: list[str], annotations: Path, *, budget, design: str,
                   floor: float, seed: int, labels: Sequence[Path], target_width: float | None,
                   level: float) -> Selected:
    """A Poisson sample with known inclusion probabilities; demonstrations and failed teacher calls are never
    drawn (a demonstration's teacher label saw its gold label; a failed call has no P_S to correct)."""
    _, _, failed = teacher_arrays(records, names)
    demo = records["demo"].fillna(False).astype(bool).to_numpy() if "demo" in records else np.zeros(len(records), bool)
    eligible = ~demo & ~failed
    b = resolve_budget(budget, int(eligible.sum()))
    entropy = records["entropy"].to_numpy(dtype=np.float64) if "entropy" in records else np.zeros(len(records))
    pi = inclusion_probabilities(entropy, b, design=design, floor=floor, eligible=eligible)
    sample = draw(pi, seed=seed, name=design)
    oracle = _oracle(records, labels, names)
    done = np.zeros(len(records), dtype=bool) if oracle is None else np.array(
        [g is not None for g in oracle.audit()], dtype=bool)
    chosen = sample.chosen & ~done
    sub = records[chosen]
    probs = sub[[f"p:{n}" for n in names]]
    frame = pd.DataFrame({"item": sub["item"], "text": sub["text"], "label": "", "teacher_label": sub["label"],
                          "teacher_confidence": probs.max(axis=1), "entropy": sub.get("entropy"),
                          **{c: probs[c] for c in probs.columns}, "reason": f"{design} design",
                          INCLUSION_COLUMN: pi[chosen]}).reset_index(drop=True)
    message = (f"{int(chosen.sum())} items drawn by the {design} design for gold (expected {b}; Poisson sampling, "
               f"so the count varies; {int(demo.sum())} demonstrations and {int(failed.sum())} failed calls never "
               f"drawn); each row's {INCLUSION_COLUMN} weights it in `silverlabel estimate`")
    if target_width is not None:
        message += "\n" + _power_message(records, names, annotations, labels, oracle, target_width, level)
    return Selected(frame=frame, label_names=names, budget=b, message=message)


def _power_message(records, names, annotations, labels, oracle, target_width, level) -> str:
    """How many gold labels a prevalence half-width needs: from the labels so far as a pilot when there are some
    (PPI and gold alone), else the classical planning number at the teacher's prevalence."""
    given = {} if oracle is None else {it: g for it, g in zip(records["item"], oracle.audit()) if g is not None}
    if len(given) < 3:
        teacher_share = records["label"].value_counts(normalize=True)
        need = {n: planning_gold(float(teacher_share.get(n, 0.0)), target_width, level) for n in names}
        return (f"gold labels for a half-width of {target_width:g} ({100 * level:g} %), gold alone, planning at the "
                f"teacher's prevalence (label a pilot and rerun with --labels for the PPI numbers): " +
                ", ".join(f"{n} {v}" for n, v in need.items()))
    inclusion = [read_gold(p, label_names=names)[1] for p in labels]
    inclusion = [i for i in inclusion if i is not None]
    est = estimate(records, names, pd.Series(given, dtype=object), level=level, target_width=target_width,
                   inclusion=pd.concat(inclusion) if inclusion else None, where={"annotations": str(annotations)})
    return (f"gold labels for a half-width of {target_width:g} ({100 * level:g} %), from the {est.n_gold} labelled "
            "so far: " + "; ".join(f"{p.parameter}: PPI++ {p.ppi_teacher}, gold alone {p.classical}"
                                    for p in est.power))


def selection_format(out: Path, fmt: str | None) -> str:
    """The export format ``write_selection`` will use; checked before a selection is computed, not after."""
    fmt = fmt or FORMATS.get(Path(out).suffix.lower())
    if fmt is not None and fmt not in ("csv", "jsonl", "labelstudio"):
        raise SilverlabelError(f"--format {fmt} is unknown; choose csv, jsonl or labelstudio")
    if fmt is None:
        raise SilverlabelError(f"--out {out}: give --format csv, jsonl or labelstudio (or a .csv, .jsonl or .json "
                               "file name)")
    return fmt


def write_selection(selected: Selected, out: Path, *, fmt: str | None = None) -> list[Path]:
    """Write the chosen items as CSV, JSONL or Label Studio tasks (plus its labelling config); returns paths."""
    out = Path(out)
    fmt = selection_format(out, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = selected.frame
    if fmt == "csv":
        frame.to_csv(out, index=False)
        return [out]
    if fmt == "jsonl":
        frame.to_json(out, orient="records", lines=True, force_ascii=False)
        return [out]
    tasks = [_task(row, selected.label_names) for row in frame.to_dict(orient="records")]
    out.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
    config = out.with_name(out.stem + ".labelstudio.xml")
    config.write_text(label_studio_config(selected.label_names), encoding="utf-8")
    return [out, config]


def _task(row: dict, label_names: Sequence[str]) -> dict:
    probs = {n: (None if pd.isna(row[f"p:{n}"]) else float(row[f"p:{n}"])) for n in label_names}
    teacher = row["teacher_label"]
    data = {"text": row["text"], "item": row["item"], "teacher_label": teacher, "teacher_probs": probs,
            "reason": row["reason"]}
    if INCLUSION_COLUMN in row:
        data[INCLUSION_COLUMN] = float(row[INCLUSION_COLUMN])
    task: dict[str, Any] = {"data": data, "predictions": []}
    if teacher is not None and not (isinstance(teacher, float) and np.isnan(teacher)):
        task["predictions"].append({
            "model_version": "silverlabel-teacher", "score": float(row["teacher_confidence"]),
            "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [teacher]}}],
        })
    return task


def label_studio_config(label_names: Sequence[str]) -> str:
    """The labelling interface the exported tasks expect: one single choice named ``label`` over ``text``."""
    choices = "\n".join(f'    <Choice value="{html.escape(n, quote=True)}"/>' for n in label_names)
    return (f'<View>\n  <Text name="text" value="$text"/>\n  <Choices name="label" toName="text" choice="single" '
            f'showInLine="true">\n{choices}\n  </Choices>\n</View>\n')


@dataclass
class Merged:
    """Training labels (the annotations frame with people's labels in place) and the teacher's error on them."""

    frame: pd.DataFrame
    human: int
    teacher_errors: int

    @property
    def teacher_error_rate(self) -> float | None:
        return self.teacher_errors / self.human if self.human else None

    def summary(self) -> str:
        rate = "n/a" if self.teacher_error_rate is None else f"{100 * self.teacher_error_rate:.1f} %"
        return (f"{self.human} human labels; the teacher was wrong on {self.teacher_errors} of them ({rate}); "
                f"{int(self.frame['label'].notna().sum())} of {len(self.frame)} items have a training label")


def merge_labels(annotations: Path, labels: Sequence[Path]) -> Merged:
    """People's labels replace the teacher's; their p:<label> becomes one-hot so soft-label training uses them
    too. The teacher's label is kept in ``teacher_label`` and the origin in ``label_source``."""
    records, names = read_annotations(annotations)
    human = merged_human_labels(records, labels, label_names=names)
    frame = records.copy()
    has = frame["item"].isin(human.index).to_numpy()
    got = frame.loc[has, "item"].map(human)
    frame.insert(3, "teacher_label", records["label"])
    frame.insert(4, "label_source", np.where(has, "human", np.where(records["label"].isna(), "none", "teacher")))
    wrong = int((frame.loc[has, "teacher_label"].to_numpy(dtype=object) != got.to_numpy(dtype=object)).sum())
    frame.loc[has, "label"] = got
    for n in names:
        frame.loc[has, f"p:{n}"] = (got == n).astype(float).to_numpy()
    if "entropy" in frame:
        frame.loc[has, "entropy"] = 0.0
    inclusion = read_inclusion(labels)
    if inclusion is not None:  # a designed sample: keep each gold item's inclusion probability for `estimate`
        frame[INCLUSION_COLUMN] = frame["item"].map(inclusion).where(has)
    return Merged(frame=frame, human=int(has.sum()), teacher_errors=wrong)


def read_inclusion(labels: Sequence[Path]) -> pd.Series | None:
    """item -> inclusion probability from label files that `select --design` wrote (a CSV/JSONL column or a
    Label Studio task's data); None when no file has them. Values outside (0, 1] are an error naming the item."""

    out: dict[str, float] = {}
    for path in map(Path, labels):
        if path.suffix.lower() == ".json":
            tasks = json.loads(path.read_text(encoding="utf-8"))
            pairs = [((t.get("data") or {}).get("item"), (t.get("data") or {}).get(INCLUSION_COLUMN))
                     for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else []
            pairs = [(str(i), v) for i, v in pairs if v is not None]
        else:
            table = read_table(path)
            if INCLUSION_COLUMN not in table.columns:
                continue
            pairs = [(str(i), v) for i, v in zip(table["item"], table[INCLUSION_COLUMN]) if not pd.isna(v)]
        if pairs:
            items = [i for i, _ in pairs]
            values = check_inclusion(pd.to_numeric(pd.Series([v for _, v in pairs]), errors="coerce"),
                                     where=str(path), items=items)
            out.update(zip(items, values.tolist()))
    return pd.Series(out, dtype=np.float64) if out else None


def write_training_labels(frame: pd.DataFrame, out: Path) -> Path:
    """The merged labels in the annotations format (.parquet, .csv or .jsonl), for ``train --annotations``."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv", ".jsonl"):
        raise SilverlabelError(f"--out {out}: use a .parquet, .csv or .jsonl file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        frame.to_parquet(out, index=False)
    elif suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        frame.to_json(out, orient="records", lines=True, force_ascii=False)
    return out
