"""Reading tables, and writing files so that a crash leaves the old file or the new one, never half of one.

A leaf module (standard library, pandas and pyarrow only): every table silverlabel reads (datasets, annotations,
gold files, prediction tables) goes through :func:`read_table`, and every writer through the functions below, so
there is one reader with one set of errors, and one temporary-name scheme, and a restart can find and remove what a killed writer (kill -9 skips every
``finally``) left behind. The scheme: ``.<final name>.<8 random characters>.tmp`` beside the final path, for files
and for run folders alike.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa

from .errors import SilverlabelError

_TEMP_NAME = re.compile(r"\..+\.[a-z0-9]{8}\.tmp")


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path`` that :func:`remove_stale_temp` recognises."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def is_temp_name(name: str) -> bool:
    return _TEMP_NAME.fullmatch(name) is not None


@contextmanager
def _replacing(path: Path):
    """Yield a temporary path; rename it onto ``path`` when the block ends normally, remove it otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with _replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with _replacing(path) as tmp:
        frame.to_parquet(tmp, index=False)


def atomic_save_npy(path: Path, array) -> None:
    """``np.save`` under a temporary name; several processes may race to write the same cache file."""
    import numpy as np

    with _replacing(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


@contextmanager
def atomic_folder(path: Path):
    """Yield a temporary folder that is renamed onto ``path`` when the block ends normally. A folder already at
    ``path`` is replaced (it is an unfinished one: callers check for completeness before writing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temp(folder: Path, *, of: str | None = None, any_hidden: bool = False) -> int:
    """Delete the temporary files and folders that killed writers left in ``folder`` (only those of the final
    name ``of`` when given; every hidden entry with ``any_hidden``, for a folder whose visible entries are all
    that belongs there, such as a study's ``runs/``, where older versions named their temporary folders
    otherwise); returns how many."""
    removed = 0
    for p in Path(folder).iterdir() if Path(folder).is_dir() else []:
        stale = p.name.startswith(".") if any_hidden else is_temp_name(p.name)
        if stale and (of is None or p.name.startswith(f".{of}.")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed += 1
    return removed


def check_writable(folder: Path, what: str = "--out") -> None:
    """Fail before the expensive part when ``folder`` cannot be written (read-only, a path under a file)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SilverlabelError(f"{what}: cannot write to {folder} ({exc.strerror or exc}); choose another "
                               "path") from None


def write_frames(path: str | Path, frames: Iterable[pd.DataFrame], *, empty: pd.DataFrame) -> None:
    """Write frames one after another to Parquet, CSV or JSONL (by extension); ``empty`` (the columns) when
    there are none. The file appears under its name only when complete, so an interrupted run never leaves a
    short file that looks finished."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".parquet", ".csv", ".jsonl"):
        raise SilverlabelError(f"{path}: use a .parquet, .csv or .jsonl file name")
    remove_stale_temp(path.parent, of=path.name)  # what an earlier, killed write of this file left
    with _replacing(path) as tmp:
        _write_frames(tmp, kind, frames, empty)


def _write_frames(tmp: Path, kind: str, frames: Iterable[pd.DataFrame], empty: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = schema = None
    written = 0
    with open(tmp, "wb") as fh:
        try:
            for frame in frames:
                if kind == ".parquet":
                    if writer is None:
                        schema = _schema(frame)
                        writer = pq.ParquetWriter(fh, schema)
                    writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
                elif kind == ".csv":
                    fh.write(frame.to_csv(index=False, header=written == 0).encode("utf-8"))
                else:
                    text = frame.to_json(orient="records", lines=True, force_ascii=False)
                    fh.write((text if text.endswith("\n") else text + "\n").encode("utf-8"))
                written += 1
        finally:
            if writer is not None:
                writer.close()
        if written == 0 and kind == ".parquet":
            empty.to_parquet(fh, index=False)
        elif written == 0 and kind == ".csv":
            fh.write(empty.to_csv(index=False).encode("utf-8"))


def _schema(frame: pd.DataFrame):
    """One Parquet schema for every chunk: a chunk where every label (or every error) is missing must not
    change a column's type."""
    import pyarrow as pa

    inferred = pa.Schema.from_pandas(frame, preserve_index=False)
    fields = []
    for f in inferred:
        if f.name in ("text", "label", "model", "error", "gold") or pa.types.is_null(f.type):
            f = f.with_type(pa.string())
        fields.append(f)
    return pa.schema(fields)


# --------------------------------------------------------------------------------------------------- reading

_READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def _table_kind(path: Path) -> tuple[str, str | None]:
    """The reader for a file name (csv, tsv, jsonl, json, parquet) and its compression ("infer" or None)."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = None
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst"):
        compression = "infer"
        suffixes = suffixes[:-1]
    kind = _READERS.get(suffixes[-1] if suffixes else "")
    if kind is None:
        raise SilverlabelError(
            f"{path}: unknown file type '{''.join(path.suffixes) or '(none)'}'; use .csv, .tsv, .jsonl, .json or "
            ".parquet (optionally .gz), or 'hf:NAME' for a Hugging Face dataset"
        )
    return kind, compression


@contextmanager
def _reading(path: Path, kind: str, encoding: str = "utf-8"):
    """Read errors as one-line messages that name the file."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise SilverlabelError(
            f"{path}: not readable as {encoding} (byte {exc.start}); re-save it as UTF-8 (or pass encoding= to "
            "load_dataset)"
        ) from None
    except pd.errors.ParserError as exc:
        raise SilverlabelError(f"{path}: malformed {kind.upper()} ({str(exc).strip()}); fix that row") from None
    except pd.errors.EmptyDataError:
        raise SilverlabelError(f"{path}: the file is empty; it needs a header and at least one row") from None
    except ValueError as exc:
        raise SilverlabelError(f"{path}: cannot be read as {kind} ({str(exc).splitlines()[0]})") from None
    except OSError as exc:  # pyarrow raises ArrowInvalid (an OSError/ValueError subclass) for non-Parquet bytes
        raise SilverlabelError(f"{path}: cannot be read as {kind} ({str(exc).splitlines()[0]})") from None


def iter_table(path: str | Path, *, chunk_rows: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """A CSV/TSV/JSONL/Parquet table (optionally compressed) in chunks of at most ``chunk_rows`` rows, so a file
    of any length is read in flat memory (a .json array, or a compressed Parquet file, which needs random access,
    is read whole and then chunked). CSV cells are strings, missing only when empty, as in :func:`read_table`."""
    import pyarrow.parquet as pq

    path = Path(path)
    kind, compression = _table_kind(path)
    with _reading(path, kind):
        if kind in ("csv", "tsv"):
            reader = pd.read_csv(path, sep="," if kind == "csv" else "\t", dtype=str, keep_default_na=False,
                                 na_values=[""], compression=compression, chunksize=chunk_rows, usecols=columns)
            with reader:
                yield from reader
        elif kind == "jsonl":
            with pd.read_json(path, lines=True, dtype=False, compression=compression, chunksize=chunk_rows) as rd:
                for frame in rd:
                    yield frame[columns] if columns else frame
        elif kind == "parquet" and not compression:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=columns):
                yield batch.to_pandas()
        else:
            frame = read_table(path)
            frame = frame[columns] if columns else frame
            for start in range(0, len(frame), chunk_rows):
                yield frame.iloc[start:start + chunk_rows]


def table_columns(path: str | Path) -> list[str]:
    """A table's column names, from its header (its first record for JSONL, its schema for Parquet)."""
    import pyarrow.parquet as pq

    path = Path(path)
    kind, compression = _table_kind(path)
    if kind == "parquet" and not compression:
        with _reading(path, kind):
            return list(pq.ParquetFile(path).schema_arrow.names)
    return list(next(iter_table(path, chunk_rows=1), pd.DataFrame()).columns)


def read_table(path: str | Path, *, encoding: str = "utf-8", strings: bool = True) -> pd.DataFrame:
    """Read a CSV/TSV/JSONL/JSON/Parquet table, optionally compressed; unreadable files are one-line errors. CSV
    cells are missing only when empty (so labels such as "None" or "NA" stay labels) and, with ``strings``, kept
    as strings (a column of codes such as "007" keeps its zeros); without, pandas infers numbers."""
    path = Path(path)
    kind, compression = _table_kind(path)
    with _reading(path, kind, encoding):
        if kind in ("csv", "tsv"):
            return pd.read_csv(path, sep="," if kind == "csv" else "\t", encoding=encoding,
                               dtype=str if strings else None, keep_default_na=False, na_values=[""],
                               compression=compression)
        if kind == "jsonl":
            return pd.read_json(path, lines=True, encoding=encoding, dtype=False, compression=compression)
        if kind == "json":
            return pd.read_json(path, encoding=encoding, dtype=False, compression=compression)
        if compression:
            # Parquet readers need random access, which a compressed stream lacks: decompress into memory first
            # (pandas' read_parquet ignores the .gz, so it would read the compressed bytes as Parquet)
            with pa.input_stream(str(path), compression="detect") as stream:
                return pd.read_parquet(io.BytesIO(stream.read()))
        return pd.read_parquet(path)
