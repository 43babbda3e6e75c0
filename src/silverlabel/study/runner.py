"""A study run from end to end: plan (``dry_run``), annotate, train every unfinished cell, summarise, report."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..assets import STUDENT_ASSETS
from ..cache import AnnotationStore
from ..conclusions import study_estimates
from ..config import StudyConfig, TrainConfig, load_study_config
from ..devices import usable_cpus
from ..errors import SilverlabelError
from ..files import (
    atomic_folder,
    atomic_write_text,
    check_writable,
    remove_stale_temp,
)
from ..multiverse import check_hypotheses, study_multiverse
from ..progress import progress_bar
from ..reporting import write_study_report
from ..students import get_student
from ..students.saved import RECORD, finish_saved_model, training_record, write_model_card
from ..summary import summarise
from ..teachers import get_teacher
from ..teachers.llamacpp import avoid_amx_buffers
from .executors import EXECUTORS
from .grid import (
    Cell,
    Prepared,
    blocked_cells,
    grid_cells,
    is_done,
    prepare_all,
    prepare_checked,
    teacher_needs,
)
from .labels import (
    TrainingData,
    annotate_all,
    prompt_for,
    training_data,
)

log = logging.getLogger(__name__)


OPTIONAL_PACKAGES = {"llama-cpp": "llama_cpp_python", "ray": "ray", "cleanlab": "cleanlab",
                     "krippendorff": "krippendorff"}  # results.json's name: the distribution's


def versions() -> dict:
    """The installed versions, read from the packages' metadata: importing Ray or llama.cpp only to read a version
    cost a study that uses neither a second or more of start-up."""
    import sklearn
    import torch
    import transformers

    out = {"silverlabel": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
           "pandas": pd.__version__}
    for key, dist in OPTIONAL_PACKAGES.items():
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


MACHINE_FLAGS = ("avx", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "fma", "f16c", "amx_tile", "neon",
                 "asimd")  # the CPU features llama.cpp's and torch's kernels branch on


def machine() -> dict:
    """What makes a run's numbers machine-dependent: the CPU, its features and how many of its cores this run may
    use, torch's threads and BLAS, and the kernels llama.cpp picked. The same config and seed give the same labels
    and predictions on one machine; on another, llama.cpp's quantised kernels can move a teacher's close calls
    (docs/testing.md), and these fields say why two results.json differ."""
    import torch

    cpu, flags = platform.processor() or platform.machine(), set()
    try:  # Linux only; elsewhere the fields stay as platform gives them
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
                break
    except OSError:
        pass
    blas = dict(re.findall(r"\b(BLAS_INFO|LAPACK_INFO)=(\w+)", torch.__config__.show()))
    out = {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
           "cpus_usable": usable_cpus(),
           "cpu_features": [f for f in MACHINE_FLAGS if f in flags],
           "torch_threads": torch.get_num_threads(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "torch_blas": blas.get("BLAS_INFO"), "torch_lapack": blas.get("LAPACK_INFO"),
           "torch_mkldnn": bool(torch.backends.mkldnn.is_available()),
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import llama_cpp

        out["llama_cpp_system_info"] = llama_cpp.llama_print_system_info().decode().strip(" |")
        # True where this build has AMX and its weight buffers are therefore off (teachers/llamacpp.py says why)
        out["llama_cpp_amx_buffers_off"] = avoid_amx_buffers(llama_cpp)
    except ImportError:
        pass
    return out


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


def dry_run(config: StudyConfig, out: str | Path, *, offline: bool | None = None) -> StudyPlan:
    """The grid and the work left, without loading any model."""
    out = Path(out)
    prepared, blocked = prepare_checked(config, offline)
    cells = grid_cells(config, prepared)
    cells += [c for d in config.datasets if d.key in blocked for c in blocked_cells(config, d)]
    done = [c.dataset not in blocked and is_done(out, c) for c in cells]
    teachers = config.teacher_specs()
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
                        cached = model.cached_count(texts, prompt_for(prep, teachers[tname], d), store)
                        todo[f"{name}/{tname}/demos {d}"] = len(texts) - cached
                finally:
                    model.close()
    finally:
        if store is not None:
            store.close()
    students = {s.name: s for s in config.students}
    steps = sum(students[c.student].steps(c.size) for c, d in zip(cells, done) if not d and c.dataset not in blocked)
    return StudyPlan(cells, done, todo, steps, blocked)


def training_jobs(config: StudyConfig, out: Path, prepared: dict[str, Prepared], cells: list[Cell],
                  records: dict[tuple[str, str], dict[int, pd.DataFrame]], *, accounting: dict[tuple, dict],
                  timing: dict[str, float], saved: dict[str, dict] | None = None) -> Iterator[tuple[Cell, dict]]:
    """(cell, payload) for every unfinished cell, in grid order. Each (dataset, source, size) builds its training
    data once, for finished cells too, so ``accounting`` (what each source dropped, flipped or spent) is complete;
    the mitigation policies' time goes to ``timing["mitigate_s"]``; a cell that saves its model gets the record
    its folder will hold in ``saved`` (by run id)."""
    teachers = config.teacher_specs()
    students = {s.name: s for s in config.students}
    cache: dict[tuple, TrainingData] = {}
    for cell in cells:
        key = (cell.dataset, cell.source.name, cell.size)
        prep = prepared[cell.dataset]
        if key not in cache:
            teacher = teachers.get(cell.source.teacher) if cell.source.teacher else None
            t0 = time.perf_counter()
            cache[key] = training_data(prep, cell.source, cell.size,
                                       records.get((cell.dataset, cell.source.teacher), {}), teacher)
            timing["mitigate_s"] += time.perf_counter() - t0 if cell.source.kind == "mitigation" else 0.0
            accounting[key] = {**cache[key].accounting, "n_train": len(cache[key].texts)}
        if is_done(out, cell):
            continue
        spec = students[cell.student]
        train_config = TrainConfig(**{k: v for k, v in spec.to_dict().items() if k != "name"})
        # the trainer is looked up here, in the driver, and travels with the payload: a student registered in
        # a notebook or script is unknown to a Ray worker's own registry
        payload = {"config": train_config, "data": cache[key], "seed": cell.seed,
                   "test_texts": prep.splits.test.texts, "label_names": prep.splits.train.label_names,
                   "trainer": get_student(train_config.backend)}
        if train_config.save_model:
            payload["save_dir"] = out / "models" / cell.run_id
            if saved is not None:
                saved[cell.run_id] = model_record(config, cell, prep, cache[key], train_config)
        yield cell, payload


def model_record(config: StudyConfig, cell: Cell, prep: Prepared, data: TrainingData,
                 train_config: TrainConfig) -> dict:
    """What a saved student's folder records about how it was made (students/saved.py reads it back)."""
    teachers = config.teacher_specs()
    spec = cell.source.spec(teachers)  # the teacher by its URI and prompt options: what made the labels
    asset = STUDENT_ASSETS.get(train_config.model)
    splits = prep.splits
    return {"silverlabel_version": __version__, "study": config.name, "run_id": cell.run_id,
            "dataset": cell.dataset, "label_source": cell.source.name, "source_spec": spec,
            "prompt_hash": hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12],
            "student": cell.student, "base_model": asset.hub_id if asset else train_config.model,
            "size": cell.size, "seed": cell.seed, "train_config": train_config.to_dict(),
            "data_fingerprint": prep.dataset.fingerprint(),
            "split": {"train": len(splits.train.items), "validation": len(splits.validation.items),
                      "test": len(splits.test.items)}, "split_seed": prep.spec.split_seed,
            "n_train": len(data.texts), "accounting": data.accounting,
            **training_record(data.items, data.texts, data.val_items, data.val_texts)}


def write_model_cards(out: Path, results: dict, cells: list[Cell]) -> int:
    """A model card in every saved model's folder, from its cell's summary row; returns how many."""
    rows = {(r["dataset"], r["label_source"], r["student"], r["size"]): r for r in results.get("results", [])}
    written = 0
    for cell in cells:
        folder = out / "models" / cell.run_id
        row = rows.get((cell.dataset, cell.source.name, cell.student, cell.size))
        if row is None or not (folder / RECORD).is_file() or not is_done(out, cell):
            continue
        preds = pd.read_parquet(out / "runs" / cell.run_id / "predictions.parquet", columns=["pred"])["pred"]
        write_model_card(folder, row, cell.seed, one_class=preds.nunique() == 1)
        written += 1
    return written


def run_study(config: StudyConfig, out: str | Path, *, executor: str = "local", offline: bool | None = None,
              executor_options: dict | None = None, report: bool = True) -> dict:
    """Run (or resume) the whole grid, then summarise it into results.json and the report; returns the results."""
    if executor not in EXECUTORS:
        raise SilverlabelError(f"--executor {executor}: choose one of {', '.join(EXECUTORS)}")
    out = Path(out)
    started = time.perf_counter()
    prepared = prepare_all(config, offline)  # a dataset too small for its split is refused before any work
    check_hypotheses(config, prepared)  # so is a hypothesis naming a class a dataset lacks
    for student in config.students:
        get_student(student.backend)  # so is an unknown student backend
    check_writable(out)
    for folder in (out, out / "teachers"):  # what writers killed mid-write left
        remove_stale_temp(folder)
    remove_stale_temp(out / "runs", any_hidden=True)  # runs/ holds run folders only: whatever is hidden is a leftover
    timing = {"annotate_s": 0.0, "train_s": 0.0, "mitigate_s": 0.0}
    atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2))
    teachers = config.teacher_specs()

    # 1. teacher labels: once per dataset, teacher and demo set, shared by every cell that needs them
    records, summaries, timing["annotate_s"] = annotate_all(config, prepared, out)

    # 2. students: every cell not yet finished
    cells = grid_cells(config, prepared)
    pending = [c for c in cells if not is_done(out, c)]
    log.info("study %s: %d runs, %d already done, %d to train", config.name, len(cells), len(cells) - len(pending),
             len(pending))
    accounting: dict[tuple, dict] = {}
    saved: dict[str, dict] = {}
    jobs = training_jobs(config, out, prepared, cells, records, accounting=accounting, timing=timing, saved=saved)

    with progress_bar(f"study {config.name}: runs", total=len(pending)) as advance:
        def on_done(cell: Cell, result: dict) -> None:
            timing["train_s"] += result["wall"]
            meta = {"dataset": cell.dataset, "label_source": cell.source.name, "student": cell.student,
                    "size": cell.size, "seed": cell.seed, "source_spec": cell.source.spec(teachers),
                    "train_config": {"name": cell.student, **result["config"]},
                    "accounting": accounting.get((cell.dataset, cell.source.name, cell.size), {})}
            if cell.run_id in saved:  # before run.json: a run is done only with its model folder complete
                names = list(prepared[cell.dataset].splits.train.label_names)
                finish_saved_model(out / "models" / cell.run_id, label_names=names,
                                   record={**saved.pop(cell.run_id), "best_epoch": result["best_epoch"]})
            write_run(out, cell, result, prep=prepared[cell.dataset], meta=meta)
            advance(1)

        if pending:
            EXECUTORS[executor](jobs, on_done, **(executor_options or {}))
        else:
            for _ in jobs:  # still fills the accounting of every cell
                pass

    # 3. summaries: one row per (dataset, student, label source, size), with bootstrap intervals
    results = summarise(config, out, prepared, cells, records, summaries, accounting)
    if config.estimates:  # "What you can conclude": estimates with intervals against the truth (conclusions.py)
        results["estimates"] = study_estimates(config, prepared, records)
    if config.hypotheses:  # "Do the conclusions survive?": every hypothesis decided by every configuration
        results["hypotheses"] = study_multiverse(config, prepared, records)
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
    results["machine"] = machine()
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str))
    write_model_cards(out, results, cells)
    if report:
        write_study_report(out)
        results["timing"]["with_report_s"] = time.perf_counter() - started
    return results


def demo_config(*, dataset: str | None = None, teacher: str | None = None, student: str | None = None,
                n_train: int | None = None, n_test: int | None = None, seeds: list[int] | None = None,
                epochs: int | None = None, learning_rate: float | None = None, chat: bool = True) -> StudyConfig:
    """configs/quick.toml with the demo command's overrides applied (the demo is that study, not a copy of it)."""
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
