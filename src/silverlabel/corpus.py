"""Applying saved students to a whole corpus: every seed of a cell, their mean, and where they disagree.

The paper's instability, per item, on the user's own texts: ``predict`` runs every given student (one folder,
several, or all seeds of one cell of a study) over a table of any length and writes, per text, the label of the
mean probability, the mean ``p:<label>``, each seed's label, the share of seeds that gave the majority label
(``agreement``) and whether they disagree (``unstable``).

The corpus is read and written in chunks, so memory stays flat; each finished chunk is written at once as a part
file under ``OUT.parts/`` and the parts are joined into OUT at the end, so a killed run, rerun, continues after the
last complete chunk and nothing is written twice. Within a chunk the texts are tokenised once per tokenizer and
batched longest first, padded only to each batch's longest text (``students.predict_proba``), and on a GPU the
students run in half precision as they trained.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .data import TEXT_COLUMNS, guess_column
from .errors import SilverlabelError
from .files import atomic_write_parquet, atomic_write_text, iter_table, read_table, table_columns, write_frames
from .progress import progress_bar
from .raydata import map_staged, stage, worker_setup
from .students.saved import RECORD, SavedStudent, read_saved

log = logging.getLogger(__name__)

CHUNK_ROWS = 4096  # texts per part file: a kill loses at most this much work
MANIFEST = "manifest.json"
SKIPPED_EMPTY = "empty text"
SKIPPED_NOT_TEXT = "not a string"


@dataclass
class PredictSummary:
    """What ``predict`` did: texts read, predicted and skipped (by reason), the unstable share, label counts."""

    out: str
    models: list[str]
    texts: int = 0
    predicted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    unstable: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    resumed_chunks: int = 0
    seconds: float = 0.0
    predict_seconds: float = 0.0  # inside the students' forward passes and tokenisation, this run's chunks only
    predicted_now: int = 0  # texts this run predicted (not read back from an earlier run's chunks)

    @property
    def texts_per_s(self) -> float:
        return self.predicted_now / self.predict_seconds if self.predict_seconds else 0.0

    @property
    def unstable_share(self) -> float:
        return self.unstable / self.predicted if self.predicted else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "unstable_share": self.unstable_share, "texts_per_s": self.texts_per_s}


# ------------------------------------------------------------------------------------------ which models
def _cell_of(record: dict) -> str:
    return f"{record['dataset']}|{record['label_source']}|{record['student']}|n{record['size']}"


def resolve_models(paths: Sequence[str | Path], *, cell: str | None = None) -> list[SavedStudent]:
    """Model folders, or a study folder (every seed of one cell: ``cell``, or the only one it saved)."""
    if not paths:
        raise SilverlabelError("predict needs at least one model folder or a study folder")
    found: list[SavedStudent] = []
    for raw in paths:
        path = Path(raw)
        if (path / "models").is_dir() or (path / "runs").is_dir():  # a study (its config.json is the study's)
            found.extend(_study_models(path, cell))
        elif (path / "config.json").is_file():
            found.append(read_saved(path))
        else:
            raise SilverlabelError(f"{path}: neither a model folder (config.json) nor a study folder with saved "
                                   "models (models/); train with --save-model (or save_model = true) first")
    names = found[0].label_names
    for s in found[1:]:
        if s.label_names != names:
            raise SilverlabelError(f"{s.folder}: its labels {s.label_names} differ from {found[0].folder}'s "
                                   f"{names}; predict with students of one label set together")
    return found


def _study_models(study: Path, cell: str | None) -> list[SavedStudent]:
    by_cell: dict[str, list[SavedStudent]] = {}
    for folder in sorted((study / "models").iterdir()) if (study / "models").is_dir() else []:
        if (folder / RECORD).is_file() and (folder / "config.json").is_file():
            saved = read_saved(folder)
            by_cell.setdefault(_cell_of(saved.record), []).append(saved)
    if not by_cell:
        raise SilverlabelError(f"{study}/models: no saved models; run the study with save_model = true")
    if cell is None and len(by_cell) > 1:
        raise SilverlabelError(f"{study} saved models of {len(by_cell)} cells; choose one with --cell: "
                               + ", ".join(sorted(by_cell)))
    key = cell if cell is not None else next(iter(by_cell))
    if key not in by_cell:
        raise SilverlabelError(f"--cell {key}: {study} has no saved models of it; its cells are: "
                               + ", ".join(sorted(by_cell)))
    return sorted(by_cell[key], key=lambda s: s.record.get("seed", 0))


def _model_names(students: list[SavedStudent]) -> list[str]:
    """One column name per student: its seed when the seeds tell them apart, else its folder name."""
    seeds = [(s.record or {}).get("seed") for s in students]
    if None not in seeds and len(set(seeds)) == len(seeds):
        return [f"s{seed}" for seed in seeds]
    return [s.folder.name for s in students]


# ------------------------------------------------------------------------------------------ the run
class _Ensemble:
    """The students loaded once, each with its tokenizer (texts tokenised once per distinct tokenizer)."""

    def __init__(self, students: list[SavedStudent], *, device: str | None, batch_size: int):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .students.hf import quiet_loading

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.models, self.tokenizers, self.max_lengths, self.fp16 = [], {}, [], []
        self.tokenizer_of: list[str] = []
        for s in students:
            key = _tokenizer_key(s.folder)
            if key not in self.tokenizers:
                self.tokenizers[key] = AutoTokenizer.from_pretrained(s.folder)
            self.tokenizer_of.append(key)
            with quiet_loading():
                model = AutoModelForSequenceClassification.from_pretrained(s.folder).to(self.device).eval()
            if model.config.num_labels != len(s.label_names):
                raise SilverlabelError(f"{s.folder}: the model has {model.config.num_labels} outputs but "
                                       f"{len(s.label_names)} label names; the folder is inconsistent")
            self.models.append(model)
            tok = self.tokenizers[key]
            self.max_lengths.append(s.max_length or min(int(tok.model_max_length), 512))
            recipe = (s.record or {}).get("train_config") or {}
            self.fp16.append(self.device.type == "cuda" and recipe.get("fp16", "auto") != "off")

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """(students, texts, labels) class probabilities."""
        from .students import predict_proba

        ids: dict[tuple[str, int], list[list[int]]] = {}
        out = []
        for k, model in enumerate(self.models):
            key = (self.tokenizer_of[k], self.max_lengths[k])
            if key not in ids:
                tok = self.tokenizers[key[0]]
                ids[key] = tok(texts, truncation=True, max_length=key[1], padding=False)["input_ids"]
            tok = self.tokenizers[key[0]]
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            out.append(predict_proba(model, ids[key], pad, batch_size=self.batch_size, device=self.device,
                                     fp16=self.fp16[k], unmasked_when_full=True))
        return np.stack(out)


def _tokenizer_key(folder: Path) -> str:
    """Students of one base model share a tokenizer: identical tokenizer files tokenise identically."""
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json",
                 "special_tokens_map.json"):
        if (folder / name).is_file():
            digest.update(name.encode() + (folder / name).read_bytes())
    return digest.hexdigest()


def _fingerprint(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _weights(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return folder / "config.json"


def rows_in(chunk: pd.DataFrame, *, text_column: str, items: pd.Series) -> pd.DataFrame:
    """A chunk as ``item``, ``text`` (None where there is none to predict) and ``skipped`` (why: a row whose text
    is empty or not a string is kept, marked, and left without predictions, counted, never dropped)."""
    raw = chunk[text_column].tolist()
    skipped = [SKIPPED_NOT_TEXT if not isinstance(t, str) else SKIPPED_EMPTY if not t.strip() else ""
               for t in raw]
    return pd.DataFrame({"item": items.astype(str).to_numpy(),
                         "text": pd.Series([t if not s else None for t, s in zip(raw, skipped)], dtype=object),
                         "skipped": skipped})


def release_memory() -> None:
    """Give freed heap back to the system after a chunk. Written by hand (a glibc call; no library does it): glibc
    keeps the memory of PyTorch's CPU tensors, whose shapes differ batch by batch, in its arenas, so the resident
    size crept up by ~60 MB per 28k texts without this and stays flat with it (measured with MiniLM, 14 chunks)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim this way
        pass


def predict_rows(rows: pd.DataFrame, *, ensemble: _Ensemble, label_names: list[str],
                 model_names: list[str]) -> pd.DataFrame:
    """One chunk's output rows (``rows`` as :func:`rows_in` makes them), in input order."""
    skipped = rows["skipped"].tolist()
    texts = rows["text"].tolist()
    ok = [i for i, s in enumerate(skipped) if not s]
    n, k = len(rows), len(label_names)
    mean = np.full((n, k), np.nan, dtype=np.float32)
    per_model = np.full((len(model_names), n), -1, dtype=np.int64)
    if ok:
        probs = ensemble.probabilities([texts[i] for i in ok])  # (models, ok, labels)
        mean[ok] = probs.mean(0)
        per_model[:, ok] = probs.argmax(2)
    frame = pd.DataFrame({"item": rows["item"].astype(str).to_numpy()})
    names = np.array(label_names, dtype=object)
    frame["label"] = pd.Series([names[j] if s == "" else None for j, s in zip(mean.argmax(1), skipped)],
                               dtype=object)
    for j, name in enumerate(label_names):
        frame[f"p:{name}"] = mean[:, j]
    for m, col in enumerate(model_names):
        frame[f"label:{col}"] = [names[j] if j >= 0 else None for j in per_model[m]]
    majority = np.zeros(n, dtype=np.float32)
    for i in ok:
        majority[i] = Counter(per_model[:, i].tolist()).most_common(1)[0][1] / len(model_names)
    frame["agreement"] = np.where([s == "" for s in skipped], majority, np.nan)
    frame["unstable"] = pd.array([bool(majority[i] < 1) if not s else pd.NA for i, s in enumerate(skipped)],
                                 dtype="boolean")
    frame["skipped"] = skipped
    release_memory()
    return frame


class RayPredictor:
    """A Ray Data actor: the students loaded once per worker, then chunk after chunk (Ray's batch inference)."""

    def __init__(self, folders: list[str], *, batch_size: int, threads: int, device: str | None = None):
        worker_setup(threads)
        students = [read_saved(f) for f in folders]
        self.names, self.model_names = students[0].label_names, _model_names(students)
        self.ensemble = _Ensemble(students, device=device, batch_size=batch_size)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return predict_rows(batch, ensemble=self.ensemble, label_names=self.names, model_names=self.model_names)


def predict(models: Sequence[str | Path], data: str | Path, out: str | Path, *, text_column: str | None = None,
            id_column: str | None = None, cell: str | None = None, batch_size: int = 32,
            chunk_rows: int = CHUNK_ROWS, device: str | None = None, overwrite: bool = False,
            executor: str = "local", executor_options: dict | None = None) -> PredictSummary:
    """Run the students over ``data`` (CSV/TSV/JSONL/Parquet, gzipped too) into ``out`` (.csv, .jsonl or
    .parquet); resumable, see the module docstring. Items are ``id_column``'s values, else row numbers from 0
    (what ``annotate`` and ``load_dataset`` use for a file without ids). ``executor="ray"`` predicts on Ray Data
    workers (``executor_options``: ``address``, ``workers``); this process still reads and writes every file."""
    started = time.perf_counter()
    data, out = Path(data), Path(out)
    if not data.is_file():
        raise SilverlabelError(f"{data}: no such file")
    if out.suffix.lower() not in (".csv", ".jsonl", ".parquet"):
        raise SilverlabelError(f"--out {out}: use a .csv, .jsonl or .parquet file name")
    parts = out.with_name(out.name + ".parts")
    if out.exists() and not overwrite and not parts.exists():
        raise SilverlabelError(f"--out {out} already exists; choose another file or pass --overwrite")
    students = resolve_models(models, cell=cell)
    columns = table_columns(data)
    where = str(data)
    for col, flag in ((text_column, "--text-column"), (id_column, "--id-column")):
        if col is not None and col not in columns:
            raise SilverlabelError(f"{where}: no column '{col}' (given by {flag}); columns are: "
                                   f"{', '.join(map(str, columns))}")
    text_column = text_column or guess_column(pd.DataFrame(columns=columns), TEXT_COLUMNS, "text", where)
    label_names, model_names = students[0].label_names, _model_names(students)
    manifest = {"data": _fingerprint(data), "text_column": text_column, "id_column": id_column,
                "chunk_rows": chunk_rows, "models": [_fingerprint(_weights(s.folder)) for s in students]}
    done = _resume(parts, manifest, overwrite=overwrite)
    summary = PredictSummary(out=str(out), models=[str(s.folder) for s in students], resumed_chunks=done)
    total = _count_rows(data, text_column)
    wanted = [text_column] + ([id_column] if id_column and id_column != text_column else [])

    def chunks():
        offset = 0
        for chunk in iter_table(data, chunk_rows=chunk_rows, columns=wanted):
            items = chunk[id_column] if id_column else pd.Series(np.arange(offset, offset + len(chunk)))
            offset += len(chunk)
            yield rows_in(chunk, text_column=text_column, items=items)

    with progress_bar(f"predict {data.name}", total=total, unit="texts") as advance:
        for index in range(done):  # what an earlier run finished: counted, not predicted again
            frame = pd.read_parquet(parts / f"part-{index:06d}.parquet")
            _count(summary, frame)
            advance(len(frame))
        rest = itertools.islice(chunks(), done, None)
        if executor == "ray":
            frames = _ray_frames(rest, parts, students, batch_size=batch_size, chunk_rows=chunk_rows,
                                 device=device, **(executor_options or {}))
        elif executor == "local":
            ensemble = _Ensemble(students, device=device, batch_size=batch_size)
            frames = (predict_rows(rows, ensemble=ensemble, label_names=label_names, model_names=model_names)
                      for rows in rest)
        else:
            raise SilverlabelError(f"--executor {executor}: choose local or ray")
        t0 = time.perf_counter()
        for index, frame in enumerate(frames, start=done):
            summary.predict_seconds += time.perf_counter() - t0
            summary.predicted_now += int((frame["skipped"] == "").sum())
            atomic_write_parquet(frame, parts / f"part-{index:06d}.parquet")
            _count(summary, frame)
            advance(len(frame))
            t0 = time.perf_counter()
    summary.seconds = time.perf_counter() - started
    atomic_write_text(sidecar(out), json.dumps({"summary": summary.to_dict(), "label_names": label_names,
                                                "seen": _seen(students)}, indent=1))
    write_frames(out, (pd.read_parquet(p) for p in sorted(parts.glob("part-*.parquet"))),
                 empty=pd.DataFrame(columns=["item", "label"]))
    shutil.rmtree(parts)
    return summary


def _ray_frames(rest, parts: Path, students: list[SavedStudent], *, batch_size: int, chunk_rows: int,
                device: str | None, address: str | None = None, workers: int = 2):
    """The remaining chunks' output frames, in order, predicted by Ray Data: the driver stages the remaining rows
    as Parquet files of a chunk each, ``RayPredictor`` actors (each loads the students once) predict them, and the driver takes
    the results back chunk by chunk, to write them as the local run does."""
    staged = parts / "staged"
    try:
        files = stage(rest, staged, {"item": "string", "text": "string", "skipped": "string"}, rows_per_file=chunk_rows)
        if files:
            yield from map_staged(files, RayPredictor, {"folders": [str(s.folder) for s in students],
                                                        "batch_size": batch_size, "device": device},
                                  batch_size=chunk_rows, out_rows=chunk_rows, workers=workers, address=address)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def sidecar(out: Path) -> Path:
    """Beside a predict output: its summary and what its students were trained or selected on."""
    return out.with_name(out.name + ".predict.json")


def _seen(students: list[SavedStudent]) -> dict:
    """The union over the students of the items and text hashes they were trained or selected on, and the
    folders without a record (whose training items are unknown)."""
    hashes: set[str] = set()
    items: set[str] = set()
    for s in students:
        if s.record is not None:
            hashes |= s.seen_text_hashes()
            items |= set(map(str, s.record.get("train_items", []) + s.record.get("validation_items", [])))
    return {"text_hashes": sorted(hashes), "items": sorted(items),
            "unrecorded": [str(s.folder) for s in students if s.record is None]}


def read_predictions(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """A predict output and what its students saw (from the file beside it), for ``estimate --predictions``."""
    path = Path(path)
    if not path.is_file():
        raise SilverlabelError(f"--predictions {path}: no such file")
    meta = sidecar(path)
    if not meta.is_file():
        raise SilverlabelError(f"--predictions {path}: {meta.name}, which `silverlabel predict` writes beside its "
                               "output, is missing; it records what the students were trained on, which estimate "
                               "needs to check they never saw the gold items: rerun predict (or keep the two together)")
    return read_table(path), json.loads(meta.read_text(encoding="utf-8"))["seen"]


def _resume(parts: Path, manifest: dict, *, overwrite: bool) -> int:
    """How many leading chunks an earlier run finished (their part files), after checking it predicted the same
    data with the same models; a fresh parts folder otherwise."""
    if parts.exists() and not overwrite:
        try:
            before = json.loads((parts / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            before = None
        if before != manifest:
            raise SilverlabelError(f"{parts} holds an unfinished run with other data, models or options; rerun "
                                   "with the same ones to finish it, or pass --overwrite to start again")
        done = 0
        while (parts / f"part-{done:06d}.parquet").is_file():
            done += 1
        log.info("resuming: %d chunk(s) of %d texts already predicted", done, manifest["chunk_rows"])
        return done
    if parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    atomic_write_text(parts / MANIFEST, json.dumps(manifest, indent=1))
    return 0


def _count_rows(path: Path, text_column: str) -> int:
    """Rows in the file, for the progress bar (one cheap pass over the text column)."""
    return sum(len(c) for c in iter_table(path, chunk_rows=65536, columns=[text_column]))


def _count(summary: PredictSummary, frame: pd.DataFrame) -> None:
    summary.texts += len(frame)
    ok = frame["skipped"] == ""
    summary.predicted += int(ok.sum())
    for reason, n in frame.loc[~ok, "skipped"].value_counts().items():
        summary.skipped[reason] = summary.skipped.get(reason, 0) + int(n)
    summary.unstable += int(frame.loc[ok, "unstable"].astype(bool).sum())
    for label, n in frame.loc[ok, "label"].value_counts().items():
        summary.label_counts[label] = summary.label_counts.get(label, 0) + int(n)
