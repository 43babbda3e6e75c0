"""The SQLite annotation store: one row per (model, prompt, item text), written as soon as it is known.

A teacher's work is the expensive part of a study, so nothing labelled is ever labelled twice: records are
committed batch by batch (WAL mode, so a killed process loses at most the batch in flight), and any change to the
model or the prompt is a different key. Failed items are stored with their error so a rerun retries only them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
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
# a hosted teacher's provider batches (batch=true): each batch, and each request with the item it belongs to and,
# once the results are read, the provider's reply body or error; recorded before the process waits on a batch
BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    tag TEXT NOT NULL,
    status TEXT NOT NULL,
    requests INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    results_read INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batch_requests (
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    batch_id TEXT,
    response TEXT,
    error TEXT,
    status INTEGER,
    PRIMARY KEY (model, prompt, custom_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batch_requests_by_batch ON batch_requests (batch_id);
"""
LOCAL = "local:"  # the id of a batch recorded before the provider gave it one


@dataclass
class BatchRow:
    batch_id: str
    model: str
    prompt: str
    tag: str
    status: str
    requests: int
    done: int
    failed: int
    created: float
    updated: float
    results_read: int

    @property
    def submitted(self) -> bool:
        return not self.batch_id.startswith(LOCAL)

# columns added after the first release: an older store gains them (NULL for its rows) when opened
ADDED_COLUMNS = {"p_s_method": "TEXT", "observed": "REAL", "completion_tokens": "INTEGER",
                 "cached_tokens": "INTEGER", "requests": "INTEGER", "cost": "REAL"}
COLUMNS = ("text_hash", "label", "probs", "entropy", "prompt_tokens", "seconds", "error", *ADDED_COLUMNS)


def _in_chunks(hashes: Iterable[str]) -> Iterator[tuple[list[str], str]]:
    """Distinct hashes in chunks of 500 with their ``?,?,...`` placeholders: SQLite caps bound parameters."""
    hashes = list(dict.fromkeys(hashes))
    for start in range(0, len(hashes), 500):
        chunk = hashes[start:start + 500]
        yield chunk, ",".join("?" * len(chunk))


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
            self._db.executescript(BATCH_SCHEMA)
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
        out: dict[str, Record] = {}
        for chunk, marks in _in_chunks(hashes):
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

    def to_label(self, model: str, prompt: str, texts: Sequence[str]) -> tuple[dict[str, str], set[str]]:
        """The distinct texts with no usable record, by hash in input order, and which of them have a failure on
        record; looked up 2048 texts at a time, so memory holds the missing texts only."""
        todo: dict[str, str] = {}
        failed: set[str] = set()
        for start in range(0, len(texts), 2048):
            chunk = {text_hash(t): t for t in texts[start:start + 2048]}
            stored = self.get_many(model, prompt, list(chunk), include_errors=True)
            failed.update(h for h, r in stored.items() if r.error is not None)
            todo.update((h, t) for h, t in chunk.items()
                        if (h not in stored or stored[h].error is not None) and h not in todo)
        return todo, failed

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
        found: set[str] = set()
        pattern = prompt_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        for chunk, marks in _in_chunks(hashes):
            rows = self._db.execute(
                f"SELECT DISTINCT text_hash FROM annotations WHERE model=? AND prompt LIKE ? ESCAPE '\\' AND "
                f"error IS NULL AND text_hash IN ({marks})", (model, pattern, *chunk))
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

    # ------------------------------------------------------------------ provider batches (batch=true)
    def batches(self, model: str | None = None, prompt: str | None = None, *, open_only: bool = False) -> list[BatchRow]:
        sql, args = "SELECT * FROM batches WHERE 1=1", []
        if model is not None:
            sql, args = sql + " AND model=?", args + [model]
        if prompt is not None:
            sql, args = sql + " AND prompt=?", args + [prompt]
        if open_only:
            sql += " AND results_read=0"
        return [BatchRow(*row) for row in self._db.execute(sql + " ORDER BY created", args)]

    def record_batch(self, model: str, prompt: str, tag: str, requests: list[tuple[str, str]], now: float) -> str:
        """Before submitting: the batch under a local id and its (custom_id, text_hash) requests, in one
        transaction, so a process killed during the submission leaves a trace a rerun can look for."""
        local = LOCAL + tag
        with self._db:
            self._db.execute("INSERT INTO batches VALUES (?,?,?,?,?,?,0,0,?,?,0)",
                             (local, model, prompt, tag, "submitting", len(requests), now, now))
            self._db.executemany(
                "INSERT OR REPLACE INTO batch_requests VALUES (?,?,?,?,?,NULL,NULL,NULL)",
                [(model, prompt, cid, h, local) for cid, h in requests])
        return local

    def name_batch(self, local: str, batch_id: str, now: float) -> None:
        """The provider's id for a recorded batch (or the batch dropped, ``batch_id`` None: never submitted)."""
        with self._db:
            if batch_id is None:
                self._db.execute("DELETE FROM batches WHERE batch_id=?", (local,))
                self._db.execute("UPDATE batch_requests SET batch_id=NULL WHERE batch_id=?", (local,))
                return
            self._db.execute("UPDATE batches SET batch_id=?, status='submitted', updated=? WHERE batch_id=?",
                             (batch_id, now, local))
            self._db.execute("UPDATE batch_requests SET batch_id=? WHERE batch_id=?", (batch_id, local))

    def update_batch(self, batch_id: str, status: str, done: int, failed: int, now: float) -> None:
        with self._db:
            self._db.execute("UPDATE batches SET status=?, done=?, failed=?, updated=? WHERE batch_id=?",
                             (status, done, failed, now, batch_id))

    def finish_batch(self, batch_id: str, results: Iterable[tuple[str, dict | None, str | None, int | None]],
                     now: float, *, unanswered_error: str | None = None) -> tuple[int, int, int]:
        """A finished batch's results in one transaction: replies and errors kept; requests it left unanswered
        (expired, cancelled) freed to be asked again, or, with ``unanswered_error`` (the batch failed as a whole),
        failed with it. Returns (answered, failed, unanswered)."""
        answered = failed = 0
        with self._db:
            for cid, body, error, status in results:
                if body is None and error is None:
                    continue
                self._db.execute("UPDATE batch_requests SET response=?, error=?, status=? WHERE custom_id=? AND "
                                 "batch_id=?", (json.dumps(body) if body is not None else None, error, status,
                                                cid, batch_id))
                answered += body is not None
                failed += error is not None
            if unanswered_error is None:
                cur = self._db.execute("UPDATE batch_requests SET batch_id=NULL WHERE batch_id=? AND response IS "
                                       "NULL AND error IS NULL", (batch_id,))
            else:
                cur = self._db.execute("UPDATE batch_requests SET error=? WHERE batch_id=? AND response IS NULL AND "
                                       "error IS NULL", (unanswered_error, batch_id))
                failed += cur.rowcount
            self._db.execute("UPDATE batches SET results_read=1, updated=? WHERE batch_id=?", (now, batch_id))
        return answered, failed, 0 if unanswered_error is not None else cur.rowcount

    def forget_batch(self, batch_id: str) -> int:
        """Drop a recorded batch; its unanswered requests are asked again by the next run."""
        with self._db:
            self._db.execute("DELETE FROM batches WHERE batch_id=?", (batch_id,))
            cur = self._db.execute("UPDATE batch_requests SET batch_id=NULL WHERE batch_id=? AND response IS NULL "
                                   "AND error IS NULL", (batch_id,))
        return cur.rowcount

    def batch_answers(self, model: str, prompt: str, hashes: Iterable[str]) -> dict[str, tuple]:
        """custom_id -> (reply body, error, HTTP status) of these items' recorded requests."""
        out: dict[str, tuple] = {}
        for chunk, marks in _in_chunks(hashes):
            rows = self._db.execute(
                f"SELECT custom_id, response, error, status FROM batch_requests WHERE model=? AND prompt=? AND "
                f"text_hash IN ({marks})", (model, prompt, *chunk))
            for cid, response, error, status in rows:
                out[cid] = (json.loads(response) if response else None, error, status)
        return out

    def retry_failed_requests(self, model: str, prompt: str, hashes: Iterable[str]) -> int:
        """The answered requests of items whose record is a failure (a failed line, or a reply that was no
        label): forgotten, so the items are asked again."""
        n = 0
        with self._db:
            for chunk, marks in _in_chunks(hashes):
                cur = self._db.execute(
                    f"DELETE FROM batch_requests WHERE model=? AND prompt=? AND (error IS NOT NULL OR response IS NOT "
                    f"NULL) AND text_hash IN ({marks})", (model, prompt, *chunk))
                n += cur.rowcount
        return n
