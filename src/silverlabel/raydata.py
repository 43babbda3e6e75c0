"""Ray, the way Ray documents batch inference: rows staged as Parquet, ``map_batches`` through a pool of actors
that each load the model once, the results streamed back to the driver in input order.

The driver alone writes files (outputs, part files, the SQLite annotation store), so a run on Ray leaves exactly
what the local run leaves and resumes the same way. ``study run --executor ray`` trains cells as Ray tasks
(:func:`ray_session` only); ``predict`` and ``annotate`` use :func:`map_staged`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .errors import SilverlabelError


def _ray():
    try:
        import ray
    except ImportError:
        raise SilverlabelError("--executor ray needs Ray: pip install 'silverlabel[ray]'") from None
    return ray


@contextmanager
def ray_session(address: str | None = None):
    """Ray, connected to ``address`` (an existing cluster) or started here and shut down after; a session some
    caller already opened is used as it is."""
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def stage(frames: Iterable[pd.DataFrame], folder: Path, columns: dict[str, str], *, rows_per_file: int) -> list[Path]:
    """Write the frames' rows as Parquet files of ``rows_per_file`` rows each (the last one shorter) in
    ``folder``, for Ray Data to read: the files, in row order. ``columns`` maps names to Arrow type names.

    Ray Data reads a file as one block and a ``map_batches`` task returns its output only when the whole block is
    done, so the file size sets both the unit of parallelism (one actor per block) and how often results reach
    the driver; one file per unit of work makes both what the caller asked for."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in columns.items()])
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    pending: list[pd.DataFrame] = []
    held = 0

    def flush(rows: pd.DataFrame) -> None:
        path = folder / f"staged-{len(paths):06d}.parquet"
        pq.write_table(pa.Table.from_pandas(rows[list(columns)], schema=schema, preserve_index=False), path)
        paths.append(path)

    for frame in frames:
        pending.append(frame)
        held += len(frame)
        while held >= rows_per_file:
            rows = pd.concat(pending, ignore_index=True)
            flush(rows.iloc[:rows_per_file])
            pending, held = [rows.iloc[rows_per_file:]], held - rows_per_file
    if held:
        flush(pd.concat(pending, ignore_index=True))
    return paths


def worker_setup(threads: int) -> None:
    """What every actor does first: its share of the node's cores for torch, and no progress bars of its own."""
    import torch

    torch.set_num_threads(max(1, threads))
    os.environ["SILVERLABEL_QUIET"] = "1"


def _read_staged(batch: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in batch["path"]], ignore_index=True)


def map_staged(staged: list[Path], actor: type, kwargs: dict, *, batch_size: int, out_rows: int, workers: int = 2,
               address: str | None = None) -> Iterator[pd.DataFrame]:
    """``actor(**kwargs, threads=...)`` on ``workers`` Ray actors (a GPU each where the cluster has one for
    every actor), called on batches of ``batch_size`` staged rows; its output frames come back in input order,
    ``out_rows`` rows at a time. Nothing is read until the caller iterates."""
    with ray_session(address) as ray:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        resources = ray.cluster_resources()
        gpus = 1 if resources.get("GPU", 0) >= workers else 0
        total = float(resources.get("CPU", 1))
        threads = max(1, int(total) // workers)
        # The actors start before any block is read; had they reserved every CPU, the read
        # tasks (1 CPU each) would wait behind them for ever (seen on a 2-CPU CI machine: no progress in 1800 s).
        # So one CPU stays free for reading; the actors still compute with ``threads`` threads each.
        actor_cpus = max(0.0, total - 1) / workers
        # One block per staged file, read by a task of its own: Ray Data 2.60's read_parquet bundles small files
        # into one block (one actor would do everything, its results arriving at the end) and its path listing
        # trips over a thread race in fsspec when aiohttp is absent. Hand-written for that reason only.
        paths = ray.data.from_items([{"path": str(p)} for p in staged], override_num_blocks=len(staged))
        ds = paths.map_batches(_read_staged, batch_size=1, batch_format="pandas").map_batches(
            actor, fn_constructor_kwargs={**kwargs, "threads": threads}, batch_size=batch_size,
            batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=actor_cpus,
            num_gpus=gpus)
        yield from ds.iter_batches(batch_size=out_rows, batch_format="pandas")
