"""The study: teacher labels -> students on gold and on teacher labels over seeds -> metrics -> report.

Everything expensive is kept on disk in the output folder and reused: teacher records in ``annotations.sqlite``
(per item, as they are made) and each finished student run in ``runs/<run id>/`` (written to a temporary folder
and renamed, so a run folder is either complete or absent). The run id is a hash of everything that made the
run, so a changed setting trains anew and an unchanged one is never redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .cache import AnnotationStore
from .config import DemoConfig, TrainConfig
from .data import Splits, load_dataset, split
from .errors import SilverlabelError
from .metrics import evaluate_table
from .progress import progress_bar
from .teachers import Annotations, Prompt, get_teacher, sample_demonstrations

log = logging.getLogger(__name__)

LABEL_SOURCES = ("gold", "teacher")


@dataclass
class SourceResult:
    """One row of Table 1: a label source's students, summarised over seeds."""

    label_source: str
    n_train: int
    n_test: int
    seeds: list[int]
    accuracy_mean: float
    accuracy_std: float
    macro_f1_mean: float
    macro_f1_std: float
    krippendorff_alpha: float | None
    p_unchanged: float
    pairwise_churn: float
    per_class: dict = field(default_factory=dict)
    teacher_accuracy: float | None = None
    teacher_macro_f1: float | None = None
    n_train_dropped: int = 0


@dataclass
class StudyResult:
    """What a study produced, with enough context to trace every number."""

    dataset: str
    provenance: str
    real_data: bool
    label_names: list[str]
    sources: list[SourceResult]
    teacher: str
    student: str
    annotation: dict
    config: dict
    out: str
    seconds: float
    versions: dict

    def to_dict(self) -> dict:
        return asdict(self)


def versions() -> dict:
    import sklearn
    import torch
    import transformers

    out = {"silverlabel": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
           "pandas": pd.__version__}
    try:
        import llama_cpp

        out["llama-cpp-python"] = llama_cpp.__version__
    except ImportError:
        pass
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SilverlabelError(f"{out}: cannot write to the output folder ({exc.strerror}); choose another --out")


def annotate_splits(splits: Splits, config: DemoConfig, store: AnnotationStore) -> tuple[Annotations, Prompt]:
    """Teacher labels for the training and validation texts (validation too: with no gold, the student's
    checkpoint can only be chosen on teacher labels, which is what a user without gold would do)."""
    train = splits.train
    demos = sample_demonstrations(train.texts, train.labels, train.label_names, k=config.k_shot,
                                  seed=config.demo_seed)
    prompt = Prompt(task=train.task, label_names=tuple(train.label_names), demonstrations=demos)
    items = train.items + splits.validation.items
    texts = train.texts + splits.validation.texts
    gold = np.concatenate([train.labels, splits.validation.labels])
    teacher = get_teacher(config.teacher, chat=config.chat)
    try:
        ann = teacher.annotate(items, texts, prompt, store=store, gold=gold, description="teacher labels")
    finally:
        teacher.close()
    ann.frame.insert(2, "split", ["train"] * len(train) + ["validation"] * len(splits.validation))
    ann.frame.insert(3, "gold", [train.label_names[i] for i in gold])
    return ann, prompt


def _run_student(out: Path, run_id: str, meta: dict, *, texts, targets, val_texts, val_labels, splits: Splits,
                 train_config: TrainConfig, seed: int, label_source: str) -> pd.DataFrame:
    """Train one student (or reuse the finished run) and return its tidy test predictions."""
    run_dir = out / "runs" / run_id
    pred_path = run_dir / "predictions.parquet"
    if pred_path.exists() and (run_dir / "run.json").exists():
        log.info("reusing finished run %s (%s, seed %d)", run_id, label_source, seed)
        return pd.read_parquet(pred_path)
    from .students import train_student

    (out / "runs").mkdir(parents=True, exist_ok=True)
    steps = train_config.epochs * -(-len(texts) // train_config.batch_size)
    tmp = Path(tempfile.mkdtemp(dir=out / "runs", prefix=f".{run_id}."))  # renamed into place when complete
    try:
        with progress_bar(f"student on {label_source} labels, seed {seed}", total=steps) as advance:
            run = train_student(texts, targets, num_labels=splits.test.num_labels, config=train_config, seed=seed,
                                val_texts=val_texts, val_labels=val_labels, test_texts=splits.test.texts,
                                progress=advance, save_dir=tmp / "model")
        names = splits.test.label_names
        frame = pd.DataFrame({
            "item": splits.test.items, "run": f"{label_source}-seed{seed}", "label_source": label_source,
            "seed": seed, "pred": [names[i] for i in run.preds], "gold": [names[i] for i in splits.test.labels]})
        for k, name in enumerate(names):
            frame[f"p:{name}"] = run.probs[:, k]
        frame.to_parquet(tmp / "predictions.parquet", index=False)
        record = {**meta, "train_config": train_config.to_dict(), "curve": run.curve, "best_epoch": run.best_epoch,
                  "steps": run.steps, "seconds": run.seconds, "device": run.device}
        (tmp / "run.json").write_text(json.dumps(record, indent=2))
        if run_dir.exists():  # a folder without its run.json, i.e. not a finished run; replace it
            shutil.rmtree(run_dir)
        os.replace(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return frame


def run_demo(config: DemoConfig | None = None, out: str | Path = "silverlabel-demo", *,
             offline: bool = True) -> StudyResult:
    """Run the paper's Table-1 study on one dataset: gold vs teacher labels, several seeds each."""
    from .reporting import write_reports

    config = config or DemoConfig()
    out = Path(out)
    _check_out(out)
    started = time.perf_counter()
    dataset = load_dataset(config.dataset, offline=offline)
    log.info("dataset %s: %d items, %s", dataset.name, len(dataset), dataset.provenance.describe())
    splits = split(dataset, n_train=config.n_train, n_test=config.n_test, n_validation=config.n_validation,
                   seed=config.split_seed)
    atomic_write_text(out / "config.json", json.dumps({"demo": config.to_dict()}, indent=2))
    with AnnotationStore(out / "annotations.sqlite") as store:
        ann, prompt = annotate_splits(splits, config, store)
    atomic_write_parquet(ann.frame, out / "annotations.parquet")
    n_tr = len(splits.train)
    teacher_train = ann.frame.iloc[:n_tr]
    teacher_val = ann.frame.iloc[n_tr:]
    label_index = {n: i for i, n in enumerate(dataset.label_names)}
    train_config = TrainConfig(model=config.student, epochs=config.epochs, learning_rate=config.learning_rate,
                               max_length=config.max_length)
    base_meta = {"dataset": dataset.name, "data": dataset.fingerprint(), "split_seed": config.split_seed,
                 "sizes": splits.sizes(), "student": train_config.to_dict()}
    frames, dropped = {}, {}
    for source in LABEL_SOURCES:
        if source == "gold":
            texts, targets = splits.train.texts, splits.train.labels
            val_texts, val_labels = splits.validation.texts, splits.validation.labels
            meta = {**base_meta, "label_source": "gold"}
            dropped[source] = 0
        else:
            ok = teacher_train["label"].notna().to_numpy()
            texts = [t for t, keep in zip(splits.train.texts, ok) if keep]
            targets = teacher_train["label"][ok].map(label_index).to_numpy(np.int64)
            vok = teacher_val["label"].notna().to_numpy()
            val_texts = [t for t, keep in zip(splits.validation.texts, vok) if keep]
            val_labels = teacher_val["label"][vok].map(label_index).to_numpy(np.int64)
            meta = {**base_meta, "label_source": "teacher", "teacher": ann.frame["model"].iloc[0],
                    "teacher_uri": config.teacher, "prompt": prompt.key(), "chat": config.chat,
                    "labels": _hash(targets.tolist())}
            dropped[source] = int((~ok).sum())
            if len(set(targets.tolist())) < 2:
                log.warning("the teacher gave every training item the same label; its students learn one class")
        source_frames = []
        for seed in config.seeds:
            run_id = f"{source}-s{seed}-{_hash({**meta, 'seed': seed})}"
            source_frames.append(_run_student(out, run_id, {**meta, "seed": seed}, texts=texts, targets=targets,
                                              val_texts=val_texts, val_labels=val_labels, splits=splits,
                                              train_config=train_config, seed=seed, label_source=source))
        frames[source] = pd.concat(source_frames, ignore_index=True)
    predictions = pd.concat(frames.values(), ignore_index=True)
    atomic_write_parquet(predictions, out / "predictions.parquet")

    sources = []
    for source, frame in frames.items():
        ev = evaluate_table(frame[["item", "run", "pred", "gold"]], source=f"{source} predictions").to_dict()
        result = SourceResult(
            label_source=source, n_train=len(splits.train) - dropped[source], n_test=len(splits.test),
            seeds=list(config.seeds), accuracy_mean=ev["accuracy_mean"], accuracy_std=ev["accuracy_std"],
            macro_f1_mean=ev["macro_f1_mean"], macro_f1_std=ev["macro_f1_std"],
            krippendorff_alpha=ev["krippendorff_alpha"], p_unchanged=ev["p_unchanged"],
            pairwise_churn=ev["pairwise_churn"], per_class=ev["per_class"], n_train_dropped=dropped[source])
        if source == "teacher":
            gold_train = teacher_train["gold"].to_numpy()
            result.teacher_accuracy = float((teacher_train["label"].to_numpy() == gold_train).mean())
            from .metrics import macro_f1

            result.teacher_macro_f1 = macro_f1(gold_train, teacher_train["label"].fillna("(failed)").to_numpy(),
                                               labels=dataset.label_names)
        sources.append(result)
    summary = asdict(ann.summary)
    summary["items_per_s"] = ann.summary.items_per_s if ann.summary.labelled else None
    result = StudyResult(
        dataset=dataset.name, provenance=dataset.provenance.describe(), real_data=dataset.provenance.real,
        label_names=dataset.label_names, sources=sources, teacher=config.teacher, student=config.student,
        annotation=summary, config=config.to_dict(), out=str(out), seconds=time.perf_counter() - started,
        versions=versions())
    results = {"dataset": result.dataset, "provenance": result.provenance, "real_data": result.real_data,
               "label_names": result.label_names, "teacher": result.teacher, "student": result.student,
               "results": [asdict(s) for s in sources], "annotation": summary, "config": result.config,
               "versions": result.versions}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, sort_keys=False))
    write_reports(result, ann=ann, predictions=predictions, out=out)
    return result
