"""The grid of a study: datasets loaded and split, the label sources, and every cell with its run id.

A cell is one student run (dataset x label source x student x size x seed); its run id is a hash of what makes
the run, so a grown grid keeps its finished runs and a changed recipe trains anew.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DatasetSpec, StudyConfig, TeacherSpec
from ..data import PRESETS, Dataset, load_dataset
from ..errors import SilverlabelError
from ..splits import Splits, split
from ..students import get_student

log = logging.getLogger(__name__)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


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
            t = teachers[self.teacher].recipe()
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
    teachers = config.teacher_specs()
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


def prepare_checked(config: StudyConfig, offline: bool | None) -> tuple[dict[str, Prepared], dict[str, str]]:
    """Every dataset loaded and split, and for each one that cannot be, the reason (its size, what to change)."""
    prepared, blocked = {}, {}
    for d in config.datasets:
        try:
            prepared[d.key] = prepare_dataset(d, sizes=config.sizes, offline=offline)
        except SilverlabelError as exc:
            blocked[d.key] = str(exc)
    return prepared, blocked


def prepare_all(config: StudyConfig, offline: bool | None) -> dict[str, Prepared]:
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


def teacher_needs(config: StudyConfig) -> dict[str, set[int]]:
    """Which demo sets of which teacher the grid needs (ensembles need all of a teacher's sets)."""
    teachers = config.teacher_specs()
    needs: dict[str, set[int]] = {}
    for s in label_sources(config):
        if s.teacher is None:
            continue
        seeds = teachers[s.teacher].demo_seeds
        needs.setdefault(s.teacher, set()).update(seeds if s.policy == "ensemble" else seeds[:1])
    for e in config.estimates:  # estimates need the first demo set of their teacher
        name = e.teacher or config.teachers[0].name
        needs.setdefault(name, set()).add(teachers[name].demo_seeds[0])
    for h in config.hypotheses:  # hypotheses are decided by every configuration of their teachers
        for t in config.teachers:
            if not h.teachers or t.name in h.teachers:
                for _, v in t.variants():
                    needs.setdefault(v.name, set()).update(v.demo_seeds)
    return needs
