"""The SQLite annotation store: one row per (model, prompt, item text), written as soon as it is known.

A teacher's work is the expensive part of a study, so nothing labelled is ever labelled twice: records are
committed batch by batch (WAL mode, so a killed process loses at most the batch in flight), and any change to the
model or the prompt is a different key. Failed items are stored with their error so a rerun retries only them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import SilverlabelError

SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    label TEXT,
    probs TEXT,
    entropy REAL,
    prompt_tokens INTEGER,
    seconds REAL,
    error TEXT,
    PRIMARY KEY (model, prompt, text_hash)
) WITHOUT ROWID;
"""
# columns added after the first release: an older store gains them (NULL for its rows) when opened
ADDED_COLUMNS = {"p_s_method": "TEXT", "observed": "REAL", "completion_tokens": "INTEGER",
                 "cached_tokens": "INTEGER", "requests": "INTEGER", "cost": "REAL"}
COLUMNS = ("text_hash", "label", "probs", "entropy", "prompt_tokens", "seconds", "error", *ADDED_COLUMNS)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@dataclass
class Record:
    """What the teacher said about one text: the constrained label and its whole distribution over labels."""

    text_hash: str
    label: str | None
    probs: list[float] | None
    entropy: float | None
    prompt_tokens: int
    seconds: float
    error: str | None = None
    p_s_method: str | None = None  # how P_S was made (None: the teacher's exact kind, stored before it was kept)
    observed: float | None = None  # share of P_S's mass the server's numbers covered (1: exact)
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # input tokens the provider served from its prompt cache
    requests: int | None = None
    cost: float | None = None  # money spent on this item, at the teacher's prices (None: no price set)


class AnnotationStore:
    """SQLite file of teacher records; safe to reopen after a crash."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(annotations)")}
            for name, kind in ADDED_COLUMNS.items():
                if name not in have:
                    try:
                        self._db.execute(f"ALTER TABLE annotations ADD COLUMN {name} {kind}")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc):
                            raise
        except sqlite3.DatabaseError as exc:
            raise SilverlabelError(f"{self.path}: not a usable annotation store ({exc}); move it away or pick "
                                   "another --cache path") from None
        except OSError as exc:
            raise SilverlabelError(f"{self.path}: cannot create the annotation store ({exc.strerror})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_many(self, model: str, prompt: str, hashes: Iterable[str], *,
                 include_errors: bool = False) -> dict[str, Record]:
        """Cached records for these text hashes (failed ones only when asked, so they are retried)."""
        hashes = list(dict.fromkeys(hashes))
        out: dict[str, Record] = {}
        for start in range(0, len(hashes), 500):  # SQLite caps the number of bound parameters
            chunk = hashes[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM annotations "
                f"WHERE model=? AND prompt=? AND text_hash IN ({marks})", (model, prompt, *chunk))
            for row in rows:
                record = Record(*row)
                if record.error is not None and not include_errors:
                    continue
                record.probs = json.loads(record.probs) if record.probs else None
                out[record.text_hash] = record
        return out

    def put_many(self, model: str, prompt: str, records: Iterable[Record]) -> None:
        rows = [(model, prompt, r.text_hash, r.label, json.dumps(r.probs) if r.probs is not None else None,
                 r.entropy, r.prompt_tokens, r.seconds, r.error, r.p_s_method, r.observed, r.completion_tokens,
                 r.cached_tokens, r.requests, r.cost) for r in records]
        names = ("model", "prompt", *COLUMNS)
        with self._db:  # one transaction per batch: all of it or none of it survives a crash
            self._db.executemany(
                f"INSERT OR REPLACE INTO annotations ({', '.join(names)}) VALUES ({','.join('?' * len(names))})",
                rows)

    def count_texts(self, model: str, prompt_prefix: str, hashes: Iterable[str]) -> int:
        """How many of these texts have a record (not a failure) under any prompt key starting with
        ``prompt_prefix``: what a dry run can tell before it knows the rest of the key."""
        hashes = list(dict.fromkeys(hashes))
        found: set[str] = set()
        pattern = prompt_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            rows = self._db.execute(
                f"SELECT DISTINCT text_hash FROM annotations WHERE model=? AND prompt LIKE ? ESCAPE '\\' AND "
                f"error IS NULL AND text_hash IN ({','.join('?' * len(chunk))})", (model, pattern, *chunk))
            found.update(h for (h,) in rows)
        return len(found)

    def count(self, model: str | None = None, prompt: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM annotations WHERE error IS NULL", []
        if model is not None:
            sql += " AND model=?"
            args.append(model)
        if prompt is not None:
            sql += " AND prompt=?"
            args.append(prompt)
        return int(self._db.execute(sql, args).fetchone()[0])

    def iter_all(self) -> Iterator[dict]:
        names = ("model", "prompt", *COLUMNS)
        for row in self._db.execute(f"SELECT {', '.join(names)} FROM annotations ORDER BY model, prompt, text_hash"):
            yield dict(zip(names, row))
