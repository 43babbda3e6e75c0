"""Executors train the cells: ``local`` one after the other in this process, ``ray`` each as a Ray task. Either
way the results come back to the driver, which alone writes to the output folder."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

from ..config import TrainConfig
from ..progress import progress_bar
from ..raydata import ray_session, worker_setup
from ..students import get_student
from .grid import Cell
from .labels import TrainingData


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
    with ray_session(address) as ray:
        remote = ray.remote(num_cpus=cpus_per_run)(_ray_train_cell)
        pending = {}
        for cell, payload in jobs:
            pending[remote.remote(payload, cpus_per_run)] = cell
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                on_done(pending.pop(ref), ray.get(ref))


def _ray_train_cell(payload: dict, threads: int) -> dict:
    worker_setup(threads)
    return train_cell(payload)


EXECUTORS: dict[str, Callable] = {"local": local_executor, "ray": ray_executor}
