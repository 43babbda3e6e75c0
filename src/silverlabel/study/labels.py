"""What each cell trains on: the teachers' records (annotated once per dataset, teacher and demonstration set)
and, from them, the training labels of a label source (gold, a teacher's, or a mitigation's)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import AnnotationStore
from ..config import StudyConfig, TeacherSpec
from ..errors import SilverlabelError
from ..files import atomic_write_parquet
from ..mitigations import GoldOracle, apply_policy
from ..teachers import Prompt, get_teacher, redact_uri, sample_demonstrations
from .grid import LabelSource, Prepared, _slug, teacher_needs

log = logging.getLogger(__name__)


def prompt_for(prep: Prepared, teacher: TeacherSpec, demo_seed: int) -> Prompt:
    train = prep.splits.train
    demos = sample_demonstrations(train.texts, train.labels, train.label_names, k=teacher.k_shot, seed=demo_seed,
                                  balanced=teacher.balanced)
    task = train.task if teacher.instruction is None else teacher.instruction.replace("{task}", train.task)
    return Prompt(task=task, label_names=tuple(train.label_names), demonstrations=demos)


def annotate(prep: Prepared, teacher: TeacherSpec, demo_seed: int, store: AnnotationStore) -> pd.DataFrame:
    """The teacher's records for the training and validation texts (validation too: with no gold, a student's
    checkpoint can only be chosen on teacher labels, which is what a user without gold would do)."""
    splits = prep.splits
    prompt = prompt_for(prep, teacher, demo_seed)
    items = splits.train.items + splits.validation.items
    texts = splits.train.texts + splits.validation.texts
    gold = np.concatenate([splits.train.labels, splits.validation.labels])
    model = get_teacher(teacher.uri, chat=teacher.chat, **teacher.options)
    try:
        ann = model.annotate(items, texts, prompt, store=store, gold=gold,
                             description=f"{teacher.name} labels {prep.spec.key} (demos {demo_seed})")
    finally:
        model.close()
    check_failures(ann.summary, teacher, where=f"{prep.spec.key} (demos {demo_seed})")
    frame = ann.frame
    frame.insert(2, "split", ["train"] * len(splits.train) + ["validation"] * len(splits.validation))
    frame.insert(3, "gold", [splits.train.label_names[i] for i in gold])
    frame["teacher"] = teacher.name
    frame["prompt"] = prompt.key()
    frame.attrs["summary"] = asdict(ann.summary)
    return frame


def annotate_all(config: StudyConfig, prepared: dict[str, Prepared], out: Path
                 ) -> tuple[dict[tuple[str, str], dict[int, pd.DataFrame]], list[dict], float]:
    """Every teacher table the grid needs, annotated (or read from the store) and written to ``teachers/``:
    ``records[(dataset, teacher)][demo seed]``, one summary per table, and the seconds spent annotating."""
    teachers = config.teacher_specs()
    records: dict[tuple[str, str], dict[int, pd.DataFrame]] = {}
    summaries, seconds = [], 0.0
    with AnnotationStore(out / "annotations.sqlite") as store:
        for name, prep in prepared.items():
            for tname, seeds in teacher_needs(config).items():
                for d in sorted(seeds):
                    t0 = time.perf_counter()
                    frame = annotate(prep, teachers[tname], d, store)
                    seconds += time.perf_counter() - t0
                    summary = frame.attrs.pop("summary")
                    atomic_write_parquet(frame, teacher_table_path(out, name, tname, d))
                    records.setdefault((name, tname), {})[d] = frame
                    summaries.append({"dataset": name, "teacher": tname, "uri": redact_uri(teachers[tname].uri),
                                      "demo_seed": d, **summary})
    return records, summaries, seconds


def check_failures(summary, teacher: TeacherSpec, *, where: str) -> None:
    """Stop the study when more than the teacher's ``max_failed_share`` of its items failed: students trained on
    what is left would answer another question. The records are in the store, so a rerun retries only the
    failed items."""
    if summary.items and summary.failed / summary.items > teacher.max_failed_share:
        raise SilverlabelError(
            f"teacher '{teacher.name}' failed on {summary.failed} of {summary.items} items of {where} "
            f"({summary.failed / summary.items:.0%} > max_failed_share {teacher.max_failed_share:g}); the errors are "
            "in the annotation records (error column); fix the server and rerun, which retries only those items, "
            "or raise max_failed_share in [[teachers]]")
    if summary.failed:
        log.warning("teacher '%s' failed on %d of %d items of %s; they are left out of its labels",
                    teacher.name, summary.failed, summary.items, where)


def teacher_table_path(out: Path, dataset: str, teacher: str, demo_seed: int) -> Path:
    return out / "teachers" / f"{_slug(dataset)}__{_slug(teacher)}__d{demo_seed}.parquet"


@dataclass
class TrainingData:
    """What one cell trains on: texts with hard targets (class indices) or soft ones (distributions)."""

    texts: list[str]
    targets: np.ndarray
    val_texts: list[str]
    val_labels: np.ndarray
    accounting: dict = field(default_factory=dict)
    items: list[str] = field(default_factory=list)  # the item ids of texts and val_texts, for a saved model's
    val_items: list[str] = field(default_factory=list)  # record (estimate --predictions checks gold overlap)


def _teacher_targets(frame: pd.DataFrame, label_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Class indices of the teacher's labels and the mask of items it labelled (failed items are left out)."""
    ok = frame["label"].notna().to_numpy()
    index = {n: i for i, n in enumerate(label_names)}
    return frame["label"][ok].map(index).to_numpy(np.int64), ok


def training_data(prep: Prepared, source: LabelSource, size: int, records: dict[int, pd.DataFrame],
                  teacher: TeacherSpec | None) -> TrainingData:
    train, val = prep.splits.train, prep.splits.validation
    pick = prep.training_positions(size)
    texts = [train.texts[i] for i in pick]
    items = [str(train.items[i]) for i in pick]
    if source.kind == "gold":
        return TrainingData(texts, train.labels[pick], val.texts, val.labels, items=items,
                            val_items=[str(i) for i in val.items])
    main = records[teacher.demo_seeds[0]]
    tr, va = main[main["split"] == "train"].iloc[pick], main[main["split"] == "validation"]
    val_targets, vok = _teacher_targets(va, train.label_names)
    val_texts = [t for t, k in zip(val.texts, vok) if k]
    val_items = [str(i) for i, k in zip(val.items, vok) if k]
    if source.kind == "teacher":
        targets, ok = _teacher_targets(tr, train.label_names)
        return TrainingData([t for t, k in zip(texts, ok) if k], targets, val_texts, val_targets,
                            {"dropped_failed": int((~ok).sum())}, [i for i, k in zip(items, ok) if k], val_items)
    ensemble = None
    if source.policy == "ensemble":
        ensemble = [records[d][records[d]["split"] == "train"].iloc[pick].reset_index(drop=True)
                    for d in teacher.demo_seeds[1:]]  # the other demonstration sets; the main one is `tr`
    gold_names = np.array([train.label_names[i] for i in train.labels[pick]], dtype=object)
    result = apply_policy(source.policy, tr.reset_index(drop=True), label_names=list(train.label_names),
                          budget=source.budget, oracle=GoldOracle(gold_names), action=source.action,
                          seed=prep.spec.split_seed, ensemble=ensemble, options=dict(source.options))
    accounting = dict(result.accounting)
    if result.soft is not None:
        keep = np.asarray(result.kept)
        return TrainingData([t for t, k in zip(texts, keep) if k], result.soft[keep], val_texts, val_targets,
                            accounting, [i for i, k in zip(items, keep) if k], val_items)
    keep = np.asarray(result.kept)
    index = {n: i for i, n in enumerate(train.label_names)}
    targets = np.array([index[lab] for lab in result.labels[keep]], dtype=np.int64)
    return TrainingData([t for t, k in zip(texts, keep) if k], targets, val_texts, val_targets, accounting,
                        [i for i, k in zip(items, keep) if k], val_items)
