"""Annotation on Ray Data: the teacher loaded once per worker, the driver the only writer of the annotation store.

The driver looks the texts up in the SQLite store, stages the distinct uncached ones as Parquet, and runs them
through ``map_batches`` with :class:`RayTeacher` actors (Ray's documented batch inference; a GPU each where the
cluster has one per worker). Each batch's records come back to the driver and are committed to the store as they
arrive, so a killed job, rerun, asks the teacher only for what was not stored. The output is then written by the
local pass, every item read from the store: the same file, rows and summary as ``executor="local"``.

A budget (``max_cost``) is enforced item by item as batches finish, which a pool of workers running ahead of
the driver cannot promise: a teacher with ``max_cost`` is refused here (hosted teachers have their own
concurrency and gain nothing from Ray).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import AnnotationStore, Record
from ..errors import SilverlabelError
from ..progress import progress_bar
from ..raydata import map_staged, stage, worker_setup
from . import get_teacher
from .base import Annotations, AnnotationSummary, ScoredElsewhere, check_distinguishable
from .prompts import Prompt


class RayTeacher:
    """A Ray Data actor: builds the teacher from its URI through the registry and takes the prompt once, then
    scores batch after batch into store records (sent back as JSON, one per row)."""

    def __init__(self, uri: str, options: dict, prompt: Prompt, *, threads: int):
        worker_setup(threads)
        self.teacher = get_teacher(uri, **options)
        self.teacher.prepare(prompt)
        self.label_names = list(prompt.label_names)
        check_distinguishable(self.label_names, self.teacher.label_tokens)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        records, cut = self.teacher.score_records(batch["text"].tolist(), batch["text_hash"].tolist(),
                                                  self.label_names)
        return pd.DataFrame({"record": [json.dumps(asdict(r)) for r in records], "truncated": cut})


def annotate_on_ray(uri: str, options: dict, items: Sequence, texts: Sequence[str], prompt: Prompt, *,
                    store: AnnotationStore, out: str | Path | None = None, gold: Sequence[int] | None = None,
                    batch_size: int | None = None, workers: int = 2, address: str | None = None,
                    description: str = "annotating") -> AnnotationSummary | Annotations:
    """What ``Teacher.annotate_to(out, ...)`` (or ``annotate`` without ``out``) gives for ``get_teacher(uri,
    **options)``, with the uncached texts scored on ``workers`` Ray Data actors (``address``: an existing
    cluster; default a local Ray started here)."""
    teacher = get_teacher(uri, **options)
    try:
        if teacher.scores_elsewhere:
            raise SilverlabelError(f"{teacher.model_id}: batch=true labels through the provider's batch API, which "
                                   "Ray cannot speed up; annotate with the local executor")
        if teacher.max_cost is not None:
            raise SilverlabelError(f"{teacher.model_id}: max_cost is enforced item by item as batches finish, "
                                   "which Ray workers running ahead cannot promise; annotate with the local "
                                   "executor, or drop max_cost")
        model_id, key = teacher.model_id, teacher.cache_key(prompt)
        todo, _ = store.to_label(model_id, key, texts)  # distinct texts without a record, failures included
        elsewhere = ScoredElsewhere(hashes=set())
        t0 = time.perf_counter()
        if todo:
            batch_size = batch_size or teacher.batch_items
            with tempfile.TemporaryDirectory(prefix="silverlabel-ray-") as tmp:
                n = len(todo)
                # a file (a Ray block: one actor's task, committed when it returns) of up to 64 batches, small
                # enough that every worker gets 16 of them
                per_file = batch_size * max(1, min(64, n // (batch_size * workers * 16)))
                files = stage([pd.DataFrame({"text_hash": list(todo), "text": list(todo.values())})], Path(tmp),
                              {"text_hash": "string", "text": "string"}, rows_per_file=per_file)
                del todo
                frames = map_staged(files, RayTeacher, {"uri": uri, "options": options, "prompt": prompt},
                                    batch_size=batch_size, out_rows=batch_size, workers=workers, address=address)
                with progress_bar(f"{description} (Ray, {workers} workers)",
                                  total=n) as advance:
                    for frame in frames:  # committed batch by batch: a killed job keeps what came back
                        records = [Record(**json.loads(r)) for r in frame["record"]]
                        store.put_many(model_id, key, records)
                        elsewhere.hashes.update(r.text_hash for r in records)
                        elsewhere.truncated += int(np.sum(frame["truncated"]))
                        advance(len(records))
        elsewhere.seconds = time.perf_counter() - t0
        common = dict(store=store, gold=gold, description=description, elsewhere=elsewhere)
        if out is None:
            return teacher.annotate(items, texts, prompt, **common)
        return teacher.annotate_to(out, items, texts, prompt, **common)
    finally:
        teacher.close()
