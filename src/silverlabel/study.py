"""The study: a grid of datasets x label sources x students x training sizes x seeds, run, resumed and summarised.

Everything expensive is kept in the output folder and never redone:

- teacher records go to ``annotations.sqlite`` as they are made (annotate once, train many: every cell that
  needs a teacher's labels reads the same records), and a table per teacher goes to ``teachers/``;
- each finished student run goes to ``runs/<run id>/`` (written to a temporary folder and renamed, so a run
  folder is complete or absent). The run id is a hash of the cell's config (data, split, size, label source,
  student recipe, seed): an unchanged cell is never retrained, a changed one gets a new id.

So a crash or Ctrl-C loses at most the run in progress, and the same command resumes. Runs are trained by an
executor (``local``: one after the other; ``ray``: each run a Ray task); the driver alone writes to the output
folder, so both give the same files and report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .cache import AnnotationStore
from .conclusions import study_estimates
from .config import DatasetSpec, StudyConfig, TeacherSpec, TrainConfig
from .data import PRESETS, Dataset, Splits, load_dataset, split
from .errors import SilverlabelError
from .files import (
    atomic_folder,
    atomic_write_parquet,
    atomic_write_text,
    check_writable,
    remove_stale_temp,
)
from .progress import progress_bar
from .students import get_student
from .teachers import Prompt, get_teacher, redact_uri, sample_demonstrations

log = logging.getLogger(__name__)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def versions() -> dict:
    import sklearn
    import torch
    import transformers

    out = {"silverlabel": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
           "pandas": pd.__version__}
    for name in ("llama_cpp", "ray", "cleanlab", "krippendorff"):
        try:
            out[name.replace("_", "-")] = __import__(name).__version__
        except (ImportError, AttributeError):
            pass
    return out


# ---------------------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class LabelSource:
    """Where a cell's training labels come from: gold, a teacher, or a mitigation of a teacher's labels."""

    name: str  # as reports show it: gold, teacher:qwen, entropy@5%:qwen
    kind: str  # gold | teacher | mitigation
    teacher: str | None = None
    policy: str | None = None
    budget: Any = None
    action: str = "replace"
    options: tuple = ()

    def spec(self, teachers: dict[str, TeacherSpec]) -> dict:
        """What defines this source's labels (the teacher by its URI and prompt, not by its name)."""
        out = {"kind": self.kind}
        if self.teacher:
            t = teachers[self.teacher].to_dict()
            t.pop("name")
            if self.policy != "ensemble":  # only the main demonstration set makes these labels
                t["demo_seeds"] = t["demo_seeds"][:1]
            out["teacher"] = t
        if self.kind == "mitigation":
            out.update(policy=self.policy, budget=self.budget, action=self.action, options=dict(self.options))
        return out


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    dataset: str
    source: LabelSource
    student: str
    size: int
    seed: int
    run_id: str

    @property
    def label(self) -> str:
        """The ``run`` column of predictions.parquet: readable, and unique across the whole grid (datasets share
        item ids, so the dataset is part of it)."""
        return f"{self.dataset}|{self.source.name}|{self.student}|n{self.size}|s{self.seed}"


def label_sources(config: StudyConfig) -> list[LabelSource]:
    teachers = [t.name for t in config.teachers]
    out: list[LabelSource] = []
    for s in config.label_sources:
        if s == "gold":
            out.append(LabelSource("gold", "gold"))
        else:
            names = teachers if s == "teacher" else [s.split(":", 1)[1]]
            out += [LabelSource(f"teacher:{n}", "teacher", teacher=n) for n in names]
    for m in config.mitigations:
        teacher = m.teacher or teachers[0]
        for b in m.budgets:
            shown = f"{100 * b:g}%" if isinstance(b, float) else str(b)
            opts = "[" + ",".join(f"{k}={v}" for k, v in sorted(m.options.items())) + "]" if m.options else ""
            out.append(LabelSource(f"{m.policy}{opts}@{shown}:{teacher}", "mitigation", teacher=teacher, policy=m.policy,
                                   budget=b, action=m.action, options=tuple(sorted(m.options.items()))))
    seen: set[str] = set()
    return [s for s in out if not (s.name in seen or seen.add(s.name))]


@dataclass
class Prepared:
    """A dataset loaded and split, with the order in which training sizes take their items."""

    spec: DatasetSpec
    dataset: Dataset
    splits: Splits
    order: np.ndarray  # training-split positions; size s trains on the first s

    def training_positions(self, size: int) -> np.ndarray:
        """Positions in the training split (and so in a teacher table's train rows, which annotate writes in
        split order) of the items a cell of this size trains on; kept in split order, so a size's items do not
        depend on the order."""
        return np.sort(self.order[:size])


def nested_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded order of the training items whose every prefix keeps the class shares (nested, stratified).

    Written by hand: scikit-learn draws each stratified subset independently, but a scaling curve needs the
    smaller sets inside the larger ones. Each item's key is (its random rank within its class + U) / class size,
    which interleaves the classes in proportion.
    """
    rng = np.random.default_rng(seed)
    key = np.empty(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        key[idx] = (rng.permutation(len(idx)) + rng.random(len(idx))) / len(idx)
    return np.argsort(key, kind="stable")


def prepare_dataset(spec: DatasetSpec, *, sizes: list[int] | None, offline: bool | None = None) -> Prepared:
    dataset = load_dataset(spec.source, text_column=spec.text_column, label_column=spec.label_column,
                           id_column=spec.id_column, task=spec.task, offline=offline)
    n_train = spec.n_train if sizes is None else max(sizes)
    kind = "real data" if dataset.provenance.real else "offline stand-in"
    where = f"[[datasets]] '{spec.key}' ({kind}, {len(dataset)} items)"
    if not dataset.provenance.real and spec.source in PRESETS:
        where_hint = f"; or use the real data: {PRESETS[spec.source].real_source}"
    else:
        where_hint = ""
    if sizes is not None and max(sizes) > spec.n_train:
        raise SilverlabelError(f"sizes: {max(sizes)} is above dataset '{spec.key}' n_train = {spec.n_train}; "
                               "raise n_train or drop the size")
    try:
        splits = split(dataset, n_train=n_train, n_test=spec.n_test, n_validation=spec.n_validation,
                       seed=spec.split_seed)
    except SilverlabelError as exc:
        raise SilverlabelError(f"{where}: {str(exc).removeprefix(f'dataset {dataset.name!r}: ')}{where_hint}") from None
    if sizes is not None and max(sizes) > len(splits.train):
        raise SilverlabelError(f"sizes: {max(sizes)} is above the {len(splits.train)} training items dataset "
                               f"'{spec.key}' has after the test and validation splits; use smaller sizes")
    return Prepared(spec, dataset, splits, nested_order(splits.train.labels, spec.split_seed))


def sizes_for(config: StudyConfig, prepared: Prepared) -> list[int]:
    return list(config.sizes) if config.sizes else [len(prepared.splits.train)]


def grid_cells(config: StudyConfig, prepared: dict[str, Prepared]) -> list[Cell]:
    """Every cell of the grid with its run id (a hash of what makes the run, never of names or order)."""
    teachers = {t.name: t for t in config.teachers}
    students = {s.name: s for s in config.students}
    cells = []
    for name, prep in prepared.items():
        data = {"data": prep.dataset.fingerprint(), "split": prep.spec.model_dump(exclude={"name", "n_train"}),
                "n_train_split": len(prep.splits.train)}
        for source in label_sources(config):
            for student in students.values():
                get_student(student.backend)  # an unknown backend fails here, before any work
                recipe = student.to_dict()
                recipe.pop("name")
                if recipe["backend"] == "hf":  # runs made before student backends existed keep their ids
                    recipe.pop("backend")
                for size in sizes_for(config, prep):
                    for seed in config.seeds:
                        key = {**data, "source": source.spec(teachers), "student": recipe, "size": size,
                               "seed": seed}
                        run_id = f"{_slug(name)}-{_slug(source.name)}-{_slug(student.name)}-n{size}-s{seed}-{_hash(key)}"
                        cells.append(Cell(name, source, student.name, size, seed, run_id))
    return cells


def is_done(out: Path, cell: Cell) -> bool:
    run_dir = out / "runs" / cell.run_id
    return (run_dir / "run.json").exists() and (run_dir / "predictions.parquet").exists()


# ------------------------------------------------------------------------------------------------ teachers


def _prompt(prep: Prepared, teacher: TeacherSpec, demo_seed: int) -> Prompt:
    train = prep.splits.train
    demos = sample_demonstrations(train.texts, train.labels, train.label_names, k=teacher.k_shot, seed=demo_seed,
                                  balanced=teacher.balanced)
    return Prompt(task=train.task, label_names=tuple(train.label_names), demonstrations=demos)


def annotate(prep: Prepared, teacher: TeacherSpec, demo_seed: int, store: AnnotationStore) -> pd.DataFrame:
    """The teacher's records for the training and validation texts (validation too: with no gold, a student's
    checkpoint can only be chosen on teacher labels, which is what a user without gold would do)."""
    splits = prep.splits
    prompt = _prompt(prep, teacher, demo_seed)
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


def teacher_needs(config: StudyConfig) -> dict[str, set[int]]:
    """Which demo sets of which teacher the grid needs (ensembles need all of a teacher's sets)."""
    teachers = {t.name: t for t in config.teachers}
    needs: dict[str, set[int]] = {}
    for s in label_sources(config):
        if s.teacher is None:
            continue
        seeds = teachers[s.teacher].demo_seeds
        needs.setdefault(s.teacher, set()).update(seeds if s.policy == "ensemble" else seeds[:1])
    for e in config.estimates:  # estimates need the first demo set of their teacher
        name = e.teacher or config.teachers[0].name
        needs.setdefault(name, set()).add(teachers[name].demo_seeds[0])
    return needs


def teacher_table_path(out: Path, dataset: str, teacher: str, demo_seed: int) -> Path:
    return out / "teachers" / f"{_slug(dataset)}__{_slug(teacher)}__d{demo_seed}.parquet"


# -------------------------------------------------------------------------------------------------- labels


@dataclass
class TrainingData:
    """What one cell trains on: texts with hard targets (class indices) or soft ones (distributions)."""

    texts: list[str]
    targets: np.ndarray
    val_texts: list[str]
    val_labels: np.ndarray
    accounting: dict = field(default_factory=dict)


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
    if source.kind == "gold":
        return TrainingData(texts, train.labels[pick], val.texts, val.labels)
    main = records[teacher.demo_seeds[0]]
    tr, va = main[main["split"] == "train"].iloc[pick], main[main["split"] == "validation"]
    val_targets, vok = _teacher_targets(va, train.label_names)
    val_texts = [t for t, k in zip(val.texts, vok) if k]
    if source.kind == "teacher":
        targets, ok = _teacher_targets(tr, train.label_names)
        return TrainingData([t for t, k in zip(texts, ok) if k], targets, val_texts, val_targets,
                            {"dropped_failed": int((~ok).sum())})
    from .mitigations import GoldOracle, apply_policy

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
                            accounting)
    keep = np.asarray(result.kept)
    index = {n: i for i, n in enumerate(train.label_names)}
    targets = np.array([index[lab] for lab in result.labels[keep]], dtype=np.int64)
    return TrainingData([t for t, k in zip(texts, keep) if k], targets, val_texts, val_targets, accounting)


# ---------------------------------------------------------------------------------------------- executors


def train_cell(payload: dict) -> dict:
    """Train one student and return its test predictions and record; runs in the driver or in a Ray worker."""
    started = time.perf_counter()
    config: TrainConfig = payload["config"]
    data: TrainingData = payload["data"]
    targets = data.targets
    if targets.ndim == 2 and config.labels == "hard":
        config = config.model_copy(update={"labels": "soft"})
    trainer = payload["trainer"] if "trainer" in payload else get_student(config.backend)
    run = trainer(
        data.texts, targets, num_labels=len(payload["label_names"]), config=config, seed=payload["seed"],
        val_texts=data.val_texts, val_labels=data.val_labels, test_texts=payload["test_texts"],
        progress=payload.get("progress"), save_dir=payload.get("save_dir"))
    return {"preds": np.asarray(run.preds), "probs": np.asarray(run.probs), "curve": run.curve,
            "best_epoch": run.best_epoch, "steps": run.steps, "seconds": run.seconds, "device": run.device,
            "wall": time.perf_counter() - started, "config": config.to_dict()}  # the recipe as trained


def local_executor(jobs: Iterable[tuple[Cell, dict]], on_done: Callable[[Cell, dict], None]) -> None:
    for cell, payload in jobs:
        steps = payload["config"].steps(len(payload["data"].texts))
        with progress_bar(f"{cell.dataset} · {cell.source.name} · n={cell.size} · seed {cell.seed}",
                          total=steps) as advance:
            payload["progress"] = advance
            on_done(cell, train_cell(payload))


def ray_executor(jobs: Iterable[tuple[Cell, dict]], on_done: Callable[[Cell, dict], None], *,
                 address: str | None = None, cpus_per_run: int = 1) -> None:
    """Each run a Ray task; results come back to the driver, which writes them like the local executor does."""
    try:
        import ray
    except ImportError:
        raise SilverlabelError("--executor ray needs Ray: pip install 'silverlabel[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=cpus_per_run)(_ray_train_cell)
        pending = {}
        for cell, payload in jobs:
            pending[remote.remote(payload, cpus_per_run)] = cell
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                on_done(pending.pop(ref), ray.get(ref))
    finally:
        if started_here:
            ray.shutdown()


def _ray_train_cell(payload: dict, threads: int) -> dict:
    import torch

    torch.set_num_threads(max(1, threads))
    os.environ["SILVERLABEL_QUIET"] = "1"
    return train_cell(payload)


EXECUTORS: dict[str, Callable] = {"local": local_executor, "ray": ray_executor}


def write_run(out: Path, cell: Cell, result: dict, *, prep: Prepared, meta: dict) -> None:
    """Write a finished run into runs/<run id>/ atomically (a temporary folder renamed into place)."""
    # a folder there without its run.json is not a finished run: atomic_folder replaces it
    with atomic_folder(out / "runs" / cell.run_id) as tmp:
        names = prep.splits.test.label_names
        frame = pd.DataFrame({
            "item": prep.splits.test.items, "run": cell.label,
            "dataset": cell.dataset, "label_source": cell.source.name, "student": cell.student, "size": cell.size,
            "seed": cell.seed, "pred": [names[i] for i in result["preds"]],
            "gold": [names[i] for i in prep.splits.test.labels]})
        for k, name in enumerate(names):
            frame[f"p:{name}"] = result["probs"][:, k].astype(np.float32)
        frame.to_parquet(tmp / "predictions.parquet", index=False)
        record = {**meta, "run_id": cell.run_id, "curve": result["curve"], "best_epoch": result["best_epoch"],
                  "steps": result["steps"], "seconds": result["seconds"], "device": result["device"]}
        (tmp / "run.json").write_text(json.dumps(record, indent=2, default=str))


# ------------------------------------------------------------------------------------------------- the run


@dataclass
class StudyPlan:
    """What ``study run --dry-run`` shows: the grid, what is done, the work left, and what cannot run."""

    cells: list[Cell]
    done: list[bool]
    annotate_items: dict[str, int]  # "dataset/teacher/demo seed" -> items not yet in the cache
    training_steps: int
    blocked: dict[str, str] = field(default_factory=dict)  # dataset -> why its cells cannot run

    @property
    def pending(self) -> int:
        return sum(1 for c, d in zip(self.cells, self.done) if not d and c.dataset not in self.blocked)

    @property
    def runnable(self) -> int:
        return sum(1 for c in self.cells if c.dataset not in self.blocked)


def prepare_checked(config: StudyConfig, offline: bool | None) -> tuple[dict[str, Prepared], dict[str, str]]:
    """Every dataset loaded and split, and for each one that cannot be, the reason (its size, what to change)."""
    prepared, blocked = {}, {}
    for d in config.datasets:
        try:
            prepared[d.key] = prepare_dataset(d, sizes=config.sizes, offline=offline)
        except SilverlabelError as exc:
            blocked[d.key] = str(exc)
    return prepared, blocked


def _prepare_all(config: StudyConfig, offline: bool | None) -> dict[str, Prepared]:
    """All datasets, or one error naming every dataset that cannot run, before any work is done."""
    prepared, blocked = prepare_checked(config, offline)
    if blocked:
        raise SilverlabelError(f"study '{config.name}' cannot run {len(blocked)} of its {len(config.datasets)} "
                               "datasets (nothing was run): " + " | ".join(blocked.values()))
    return prepared


def blocked_cells(config: StudyConfig, dataset: DatasetSpec) -> list[Cell]:
    """The cells a dataset that cannot be prepared would have (no run ids: they depend on the data)."""
    sizes = list(config.sizes) if config.sizes else [dataset.n_train]
    return [Cell(dataset.key, source, student.name, size, seed, "")
            for source in label_sources(config) for student in config.students for size in sizes
            for seed in config.seeds]


def dry_run(config: StudyConfig, out: str | Path, *, offline: bool | None = None) -> StudyPlan:
    """The grid and the work left, without loading any model."""
    out = Path(out)
    prepared, blocked = prepare_checked(config, offline)
    cells = grid_cells(config, prepared)
    cells += [c for d in config.datasets if d.key in blocked for c in blocked_cells(config, d)]
    done = [c.dataset not in blocked and is_done(out, c) for c in cells]
    teachers = {t.name: t for t in config.teachers}
    todo: dict[str, int] = {}
    store = AnnotationStore(out / "annotations.sqlite") if (out / "annotations.sqlite").exists() else None
    try:
        for name, prep in prepared.items():
            texts = prep.splits.train.texts + prep.splits.validation.texts
            for tname, seeds in teacher_needs(config).items():
                if store is None:  # nothing cached yet: no need to resolve the model (a shipped GGUF is joined)
                    todo.update({f"{name}/{tname}/demos {d}": len(texts) for d in sorted(seeds)})
                    continue
                # builds the teacher without loading weights; an openai: teacher probes its server here
                model = get_teacher(teachers[tname].uri, chat=teachers[tname].chat, **teachers[tname].options)
                try:
                    for d in sorted(seeds):
                        cached = model.cached_count(texts, _prompt(prep, teachers[tname], d), store)
                        todo[f"{name}/{tname}/demos {d}"] = len(texts) - cached
                finally:
                    model.close()
    finally:
        if store is not None:
            store.close()
    students = {s.name: s for s in config.students}
    steps = sum(students[c.student].steps(c.size) for c, d in zip(cells, done) if not d and c.dataset not in blocked)
    return StudyPlan(cells, done, todo, steps, blocked)


def run_study(config: StudyConfig, out: str | Path, *, executor: str = "local", offline: bool | None = None,
              executor_options: dict | None = None, report: bool = True) -> dict:
    """Run (or resume) the whole grid, then summarise it into results.json and the report; returns the results."""
    if executor not in EXECUTORS:
        raise SilverlabelError(f"--executor {executor}: choose one of {', '.join(EXECUTORS)}")
    out = Path(out)
    started = time.perf_counter()
    prepared = _prepare_all(config, offline)  # a dataset too small for its split is refused before any work
    for student in config.students:
        get_student(student.backend)  # so is an unknown student backend
    check_writable(out)
    for folder in (out, out / "teachers"):  # what writers killed mid-write left
        remove_stale_temp(folder)
    remove_stale_temp(out / "runs", any_hidden=True)  # runs/ holds run folders only: whatever is hidden is a leftover
    timing = {"annotate_s": 0.0, "train_s": 0.0, "mitigate_s": 0.0}
    atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2))
    teachers = {t.name: t for t in config.teachers}
    students = {s.name: s for s in config.students}

    # 1. teacher labels: once per dataset, teacher and demo set, shared by every cell that needs them
    records: dict[tuple[str, str], dict[int, pd.DataFrame]] = {}
    summaries = []
    with AnnotationStore(out / "annotations.sqlite") as store:
        for name, prep in prepared.items():
            for tname, seeds in teacher_needs(config).items():
                for d in sorted(seeds):
                    t0 = time.perf_counter()
                    frame = annotate(prep, teachers[tname], d, store)
                    timing["annotate_s"] += time.perf_counter() - t0
                    summary = frame.attrs.pop("summary")
                    atomic_write_parquet(frame, teacher_table_path(out, name, tname, d))
                    records.setdefault((name, tname), {})[d] = frame
                    summaries.append({"dataset": name, "teacher": tname, "uri": redact_uri(teachers[tname].uri),
                                      "demo_seed": d, **summary})

    # 2. students: every cell not yet finished
    cells = grid_cells(config, prepared)
    pending = [c for c in cells if not is_done(out, c)]
    log.info("study %s: %d runs, %d already done, %d to train", config.name, len(cells), len(cells) - len(pending),
             len(pending))
    accounting: dict[tuple, dict] = {}

    def jobs():
        cache: dict[tuple, TrainingData] = {}
        for cell in cells:
            key = (cell.dataset, cell.source.name, cell.size)
            if key not in cache:
                prep = prepared[cell.dataset]
                teacher = teachers.get(cell.source.teacher) if cell.source.teacher else None
                t0 = time.perf_counter()
                cache[key] = training_data(prep, cell.source, cell.size,
                                           records.get((cell.dataset, cell.source.teacher), {}), teacher)
                timing["mitigate_s"] += time.perf_counter() - t0 if cell.source.kind == "mitigation" else 0.0
                accounting[key] = {**cache[key].accounting, "n_train": len(cache[key].texts)}
            if is_done(out, cell):
                continue
            prep = prepared[cell.dataset]
            spec = students[cell.student]
            train_config = TrainConfig(**{k: v for k, v in spec.to_dict().items() if k != "name"})
            # the trainer is looked up here, in the driver, and travels with the payload: a student registered in
            # a notebook or script is unknown to a Ray worker's own registry
            payload = {"config": train_config, "data": cache[key], "seed": cell.seed,
                       "test_texts": prep.splits.test.texts, "label_names": prep.splits.train.label_names,
                       "trainer": get_student(train_config.backend)}
            if train_config.save_model:
                payload["save_dir"] = out / "models" / cell.run_id
            yield cell, payload

    with progress_bar(f"study {config.name}: runs", total=len(pending)) as advance:
        def on_done(cell: Cell, result: dict) -> None:
            timing["train_s"] += result["wall"]
            meta = {"dataset": cell.dataset, "label_source": cell.source.name, "student": cell.student,
                    "size": cell.size, "seed": cell.seed, "source_spec": cell.source.spec(teachers),
                    "train_config": {"name": cell.student, **result["config"]},
                    "accounting": accounting.get((cell.dataset, cell.source.name, cell.size), {})}
            write_run(out, cell, result, prep=prepared[cell.dataset], meta=meta)
            advance(1)

        if pending:
            EXECUTORS[executor](jobs(), on_done, **(executor_options or {}))
        else:
            for _ in jobs():  # still fills the accounting of every cell
                pass

    # 3. summaries: one row per (dataset, student, label source, size), with bootstrap intervals
    from .summary import summarise

    results = summarise(config, out, prepared, cells, records, summaries, accounting)
    if config.estimates:  # "What you can conclude": estimates with intervals against the truth (conclusions.py)
        results["estimates"] = study_estimates(config, prepared, records)
    wall = time.perf_counter() - started
    work = timing["annotate_s"] + timing["train_s"] + timing["mitigate_s"]
    results["timing"] = {"wall_s": wall, **timing, "overhead_s": wall - work,
                         "overhead_share": (wall - work) / wall if wall else 0.0,
                         "runs_trained": len(pending), "method": (
                             "overhead = wall time of run_study minus the time inside the teacher's annotate "
                             "calls, inside each student run (model load, training, test prediction) and inside "
                             "the mitigation policies (embeddings, cleanlab, error models); it "
                             "covers data loading, planning, writing runs, metrics with bootstrap intervals "
                             "and the report")}
    results["versions"] = versions()
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str))
    if report:
        from .reporting import write_study_report

        write_study_report(out)
        results["timing"]["with_report_s"] = time.perf_counter() - started
    return results


def demo_config(*, dataset: str | None = None, teacher: str | None = None, student: str | None = None,
                n_train: int | None = None, n_test: int | None = None, seeds: list[int] | None = None,
                epochs: int | None = None, learning_rate: float | None = None, chat: bool = True) -> StudyConfig:
    """configs/quick.toml with the demo command's overrides applied (the demo is that study, not a copy of it)."""
    from .config import load_study_config

    data = load_study_config("quick").to_dict()
    if dataset is not None:
        data["datasets"] = [{**data["datasets"][0], "source": dataset, "name": None}]
    for d in data["datasets"]:
        if n_train is not None:
            d["n_train"] = n_train
        if n_test is not None:
            d["n_test"] = n_test
    for t in data["teachers"]:
        if teacher is not None:
            t["uri"] = teacher
            t["name"] = teacher.split(":", 1)[-1].rsplit("/", 1)[-1].rsplit("#", 1)[-1] or "teacher"
        t["chat"] = chat
    for s in data["students"]:
        if student is not None:
            s["model"] = student
            s["name"] = student.rstrip("/").rsplit("/", 1)[-1]
        if epochs is not None:
            s["epochs"] = epochs
        if learning_rate is not None:
            s["learning_rate"] = learning_rate
    if seeds is not None:
        data["seeds"] = seeds
    return StudyConfig.from_dict(data, where="demo options")
