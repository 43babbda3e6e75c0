"""The teacher contract: a backend scores label strings; the base class does the rest.

A backend implements :meth:`Teacher.prepare` (see the prompt once) and :meth:`Teacher.score` (for each text, the
log-probability of every label's tokens, terminator included, as the continuation of the prompt). From those the
base class derives the full label distribution P_S(y|x), its entropy, and the label that guided decoding over the
label set would return (greedy over the token trie of the labels, exactly as vLLM's guided choice decodes).
P_S is each label's sequence probability renormalised over the labels (``p_s="sequence"``, the default) or the
distribution guided decoding samples from, each step renormalised over the label tokens allowed there
(``p_s="guided"``), which needs only the trie's branching steps read. It also
owns caching, batching, progress and accounting, so every backend gets them the same way.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError
from scipy.special import entr  # -p log p, 0 at p = 0: the ufunc, ~100x cheaper per item than scipy.stats.entropy

from ..cache import AnnotationStore, Record, text_hash
from ..errors import SilverlabelError
from ..files import write_frames
from ..metrics.classification import accuracy, macro_f1
from ..progress import progress_bar
from .prompts import Prompt
from .trie import distribution, guided_choice, guided_steps

log = logging.getLogger(__name__)


@dataclass
class Usage:
    """What one item cost the provider, from the replies' ``usage``: tokens in (and of those, read from the
    provider's prompt cache), tokens out, requests, and the money they come to at the teacher's prices."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    cost: float | None = None

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.cached_tokens += other.cached_tokens
        self.completion_tokens += other.completion_tokens
        self.requests += other.requests


@dataclass
class Scored:
    """A backend's raw answer for one text: the label tokens' log-probabilities (from which the base class makes
    P_S), or, from a backend that sees no token ids (a hosted chat API), the distribution itself in ``probs``
    with the way it was made (``p_s_method``) and the share of its mass the server's numbers covered."""

    token_logprobs: list[list[float]]  # per label: log-prob of each of its tokens (terminator last)
    prompt_tokens: int
    error: str | None = None
    choice: int | None = None  # the guided-decoding label when the backend got it from the server itself
    truncated: bool = False  # the text was cut to fit the model's context (counted in the summary)
    probs: list[float] | None = None  # P_S made by the backend (then ``choice`` is required)
    p_s_method: str | None = None  # how ``probs`` was made (a name in P_S_METHODS); None: from token_logprobs
    observed: float = 1.0  # share of P_S's mass seen in the server's numbers; the rest is bounded, not seen
    usage: Usage | None = None  # tokens, requests and money, where the backend pays for them


@dataclass
class ScoredElsewhere:
    """Items this run scored before the pass that writes the output, elsewhere (on Ray workers, or through a
    provider's batch API) and stored: counted as labelled in this run, their failures kept rather than retried."""

    hashes: set[str]
    truncated: int = 0
    seconds: float = 0.0  # wall time spent there, part of this run's


@dataclass
class AnnotationSummary:
    """What one annotation pass cost and produced."""

    items: int
    cached: int
    labelled: int
    failed: int
    seconds: float
    prompt_tokens: int
    label_counts: dict[str, int]
    truncated: int = 0  # items of this pass whose text was cut to fit the model's context
    completion_tokens: int = 0  # tokens the teacher generated for the items labelled in this pass
    requests: int = 0  # requests sent for the items labelled in this pass (remote teachers)
    cost: float | None = None  # money spent in this pass (None: the teacher has no prices)
    table_cost: float | None = None  # money all the pass's items cost, cached ones when they were labelled
    p_s_methods: dict[str, int] | None = None  # how each labelled item's P_S was made -> items
    min_observed: float | None = None  # the smallest share of an item's P_S mass the server's numbers covered
    accuracy: float | None = None
    macro_f1: float | None = None
    confusion: list[list[int]] | None = None  # gold (rows) x teacher label (columns), in label order

    @property
    def items_per_s(self) -> float:
        return self.labelled / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Annotations:
    """One row per item: label, entropy, p:<label> columns, and provenance (model, demo seed, tokens, seconds)."""

    frame: pd.DataFrame
    label_names: list[str]
    summary: AnnotationSummary

    def probs(self) -> np.ndarray:
        return self.frame[[f"p:{n}" for n in self.label_names]].to_numpy(dtype=np.float64)

    def label_index(self) -> np.ndarray:
        index = {n: i for i, n in enumerate(self.label_names)}
        return self.frame["label"].map(index).to_numpy()


P_S_KINDS = ("sequence", "guided")


def check_p_s(p_s: str) -> str:
    if p_s not in P_S_KINDS:
        raise SilverlabelError(f"p_s '{p_s}' is unknown; choose one of {', '.join(P_S_KINDS)}")
    return p_s


def store_key(prompt: Prompt, *, chat: bool) -> str:
    """The prompt part of an annotation's cache key; also used by the dry run, which has no teacher loaded."""
    return f"{prompt.key()}:{'chat' if chat else 'raw'}"


def check_distinguishable(label_names: Sequence[str], label_tokens: Sequence[Sequence[int]]) -> None:
    seen: dict[tuple[int, ...], str] = {}
    for name, toks in zip(label_names, label_tokens):
        key = tuple(toks)
        if key in seen:
            raise SilverlabelError(
                f"labels '{seen[key]}' and '{name}' tokenise identically for this model; rename one of them")
        seen[key] = name


class BudgetReached(SilverlabelError):
    """The next items would pass the teacher's ``max_cost``; everything labelled before is in the store."""


# how an item's P_S was made -> whether it is an estimate rather than the model's own numbers (exact, or bounded by
# the recorded unobserved mass); the report and annotate's summary warn about the estimates
P_S_METHODS = {"sequence": False, "guided": False, "token_ids": False, "top_logprobs": False, "sample": True,
               "verbalized": True, "label": True}


def _entropy(p: np.ndarray) -> float:
    """Entropy in nats of p normalised to sum 1; zero-probability labels contribute nothing."""
    return float(entr(p / p.sum()).sum())


class Teacher(ABC):
    """An LLM that labels texts with a fixed few-shot prompt."""

    backend: ClassVar[str] = ""
    batch_items: int = 16  # texts per score() call unless annotate() is given batch_size
    max_cost: float | None = None  # stop before spending more than this (teachers that are paid per token)

    def __init__(self, model: str, *, chat: bool = True, p_s: str = "sequence"):
        self.model = model
        self.chat = chat
        self.p_s = check_p_s(p_s)
        self.prompt: Prompt | None = None
        self.label_tokens: list[list[int]] = []

    # ------------------------------------------------------------------ what a backend implements
    @property
    @abstractmethod
    def model_id(self) -> str:
        """Identifies the weights (name and hash where known), part of every cache key."""

    @abstractmethod
    def prepare(self, prompt: Prompt) -> None:
        """Take the prompt (evaluate the shared prefix, tokenise the labels into ``self.label_tokens``)."""

    @abstractmethod
    def score(self, texts: Sequence[str]) -> list[Scored]:
        """Label-token log-probabilities for each text, in order."""

    def close(self) -> None:
        """Free the model."""

    @property
    def scores_elsewhere(self) -> bool:
        """Whether this teacher labels a run's uncached texts somewhere else first (a provider's batch API),
        through :meth:`score_elsewhere`, before the pass that writes the output."""
        return False

    def score_elsewhere(self, texts: Sequence[str], prompt: Prompt, store: AnnotationStore | None, *,
                        description: str) -> ScoredElsewhere | None:
        return None

    # ------------------------------------------------------------------ shared machinery
    def cache_key(self, prompt: Prompt) -> str:
        """The prompt part of the store key: the prompt, the chat flag, and whatever else the backend says
        changes its scores (:meth:`scoring_key`)."""
        extra = self.scoring_key(prompt)
        kind = "" if self.p_s == "sequence" else f":p_s={self.p_s}"  # the default keeps the keys stored before
        return store_key(prompt, chat=self.chat) + kind + (f":{extra}" if extra else "")

    def needed_nodes(self, trie: dict[tuple[int, ...], list[int]]) -> set[tuple[int, ...]]:
        """The trie nodes whose children's log-probabilities this teacher's P_S depends on: all of them for the
        sequence probability; under ``p_s = "guided"`` only those that branch (see :func:`guided_steps`)."""
        return set(trie) if self.p_s == "sequence" else {n for n, kids in trie.items() if len(kids) > 1}

    def scoring_key(self, prompt: Prompt) -> str:
        """What, beyond the model, prompt and chat flag, changes this backend's scores (e.g. the way a server is
        asked for them); empty when nothing does. May prepare the prompt to find out."""
        return ""

    def cached_count(self, texts: Sequence[str], prompt: Prompt, store: AnnotationStore) -> int:
        """How many distinct texts already have a record in ``store`` for this model and prompt (what a dry run
        reports; loads no weights, though an openai teacher asks its server for the model's id)."""
        return len(store.get_many(self.model_id, self.cache_key(prompt), [text_hash(t) for t in texts]))

    def annotate(self, items: Iterable, texts: Iterable[str], prompt: Prompt, *,
                 store: AnnotationStore | None = None, batch_size: int | None = None,
                 gold: Iterable[int] | None = None, description: str = "annotating",
                 total: int | None = None, elsewhere: ScoredElsewhere | None = None) -> Annotations:
        """Label every text, reusing cached records, committing each batch as it finishes; the frame is built
        from per-chunk frames, so nothing per item outlives its chunk except the frame's own rows."""
        acc = _Accumulator(list(prompt.label_names))
        frames = list(self._stream(items, texts, prompt, store=store, batch_size=batch_size, gold=gold,
                                   description=description, total=total, acc=acc, elsewhere=elsewhere))
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True) if frames else \
            self._frame([], [], [], {}, acc.label_names, prompt)
        return Annotations(frame=frame, label_names=acc.label_names, summary=acc.summary())

    def annotate_to(self, path: str | Path, items: Iterable, texts: Iterable[str], prompt: Prompt, *,
                    store: AnnotationStore | None = None, batch_size: int | None = None,
                    gold: Iterable[int] | None = None, description: str = "annotating",
                    total: int | None = None, elsewhere: ScoredElsewhere | None = None) -> AnnotationSummary:
        """Like :meth:`annotate`, but each chunk goes straight to a Parquet, CSV or JSONL file (by extension),
        so memory stays flat however many items stream through; with gold, a ``gold`` column (label names)."""
        acc = _Accumulator(list(prompt.label_names))
        chunks = self._stream(items, texts, prompt, store=store, batch_size=batch_size, gold=gold,
                              description=description, total=total, acc=acc, gold_column=True,
                              elsewhere=elsewhere)
        write_frames(path, chunks, empty=self._frame([], [], [], {}, acc.label_names, prompt))
        return acc.summary()

    def score_records(self, texts: Sequence[str], hashes: Sequence[str],
                      label_names: list[str]) -> tuple[list[Record], list[bool]]:
        """One batch scored into the records the store keeps, and which texts were cut to fit the context."""
        t0 = time.perf_counter()
        scored = self.score(texts)
        per_item = (time.perf_counter() - t0) / max(1, len(texts))
        return ([self._record(h, s, label_names, per_item) for h, s in zip(hashes, scored)],
                [s.truncated for s in scored])

    def _stream(self, items, texts, prompt, *, store, batch_size, gold, description, total, acc,
                gold_column=False, elsewhere: ScoredElsewhere | None = None) -> Iterator[pd.DataFrame]:
        """One frame per chunk of CHUNK_ITEMS items: cache lookup, scoring of the rest in batches (each written
        to the store as it finishes), and the chunk's rows. Without a store, a text repeated in two chunks is
        scored twice: remembering every text seen would make memory grow with the run."""
        label_names = acc.label_names
        batch_size = batch_size or self.batch_items
        if elsewhere is None and self.scores_elsewhere:
            items, texts = list(items), list(texts)
            elsewhere = self.score_elsewhere(texts, prompt, store, description=description)
        uncounted: set[str] = set()  # scored elsewhere, not yet counted (a text repeated in two chunks counts once)
        if elsewhere is not None:
            acc.truncated += elsewhere.truncated
            uncounted = set(elsewhere.hashes)
        key = self.cache_key(prompt)
        if total is None:
            total = len(texts) if hasattr(texts, "__len__") else 0
        gold_iter = iter(gold) if gold is not None else None
        started = time.perf_counter() - (elsewhere.seconds if elsewhere is not None else 0.0)
        rows = zip(items, texts)
        with progress_bar(description, total=total) as advance:
            while chunk := list(itertools.islice(rows, CHUNK_ITEMS)):
                c_items = [i for i, _ in chunk]
                c_texts = [t for _, t in chunk]
                del chunk
                hashes = [text_hash(t) for t in c_texts]
                records = store.get_many(self.model_id, key, hashes, include_errors=elsewhere is not None) \
                    if store is not None else {}
                first: dict[str, int] = {}  # the first occurrence of each distinct text
                for i, h in enumerate(hashes):
                    first.setdefault(h, i)
                mine = [h for h in first if h in uncounted]
                uncounted.difference_update(mine)
                if elsewhere is not None:  # failures stored before this run are retried; this run's are kept
                    records = {h: r for h, r in records.items() if r.error is None or h in elsewhere.hashes}
                    acc.spend([records[h] for h in mine if h in records])
                todo = [i for h, i in first.items() if h not in records]
                if todo and (self.prompt is None or self.prompt.key() != prompt.key()):
                    self.prepare(prompt)
                    check_distinguishable(label_names, self.label_tokens)
                start = 0
                while start < len(todo):
                    n = acc.affordable(min(batch_size, len(todo) - start), self.max_cost)
                    if n == 0:
                        raise BudgetReached(
                            f"{self.model_id}: max_cost {self.max_cost:g} reached: {acc.cost or 0:.4f} spent on "
                            f"{acc.scored + start} item(s) this run, the next would cost up to "
                            f"{acc.max_item_cost or 0:.4f}; the labelled items are cached, a rerun with a higher "
                            "max_cost continues from them")
                    part = todo[start:start + n]
                    start += n
                    batch, cut = self.score_records([c_texts[i] for i in part], [hashes[i] for i in part],
                                                    label_names)
                    acc.truncated += sum(cut)
                    acc.spend(batch)
                    if store is not None:
                        store.put_many(self.model_id, key, batch)
                    records.update({r.text_hash: r for r in batch})
                    advance(len(part))
                advance(len(c_texts) - len(todo))
                frame = self._frame(c_items, c_texts, hashes, records, label_names, prompt)
                c_gold = None
                if gold_iter is not None:
                    c_gold = np.fromiter(itertools.islice(gold_iter, len(c_texts)), dtype=np.int64)
                    if len(c_gold) != len(c_texts):
                        raise SilverlabelError(f"gold has fewer labels than there are texts (ran out after "
                                               f"{acc.items + len(c_gold)})")
                    if gold_column:
                        frame["gold"] = [label_names[g] if 0 <= g < len(label_names) else None for g in c_gold]
                acc.add(frame, scored=len(todo) + len(mine), gold=c_gold, seconds=time.perf_counter() - started)
                yield frame

    def _record(self, h: str, scored: Scored, label_names: list[str], seconds: float) -> Record:
        usage = scored.usage or Usage()
        paid = dict(completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens,
                    requests=usage.requests, cost=usage.cost) if scored.usage is not None else {}
        if scored.error is not None:
            return Record(h, None, None, None, scored.prompt_tokens, seconds, scored.error, **paid)
        if scored.probs is not None:  # a backend that made P_S itself (no token ids to make it from)
            p = np.asarray(scored.probs, dtype=np.float64)
            return Record(h, label_names[scored.choice], [float(x) for x in p], _entropy(p),
                          scored.prompt_tokens, seconds, p_s_method=scored.p_s_method,
                          observed=float(scored.observed), **paid)
        steps = scored.token_logprobs
        if self.p_s == "guided":
            steps = guided_steps(self.label_tokens, steps)
        p = distribution(steps)
        choice = scored.choice if scored.choice is not None else guided_choice(self.label_tokens, steps)
        return Record(h, label_names[choice], [float(x) for x in p], _entropy(p), scored.prompt_tokens,
                      seconds, p_s_method=scored.p_s_method or self.p_s, observed=1.0, **paid)

    def _frame(self, items, texts, hashes, records, label_names, prompt) -> pd.DataFrame:
        """Columns built one at a time: a row tuple per item would double the chunk's Python objects."""
        recs = [records[h] for h in hashes]
        nan = [math.nan] * len(label_names)
        probs = np.array([r.probs or nan for r in recs], dtype=np.float64).reshape(len(recs), len(label_names))
        cols = {"item": list(items), "text": list(texts), "label": [r.label for r in recs],
                "entropy": np.array([math.nan if r.entropy is None else r.entropy for r in recs], dtype=np.float64)}
        cols.update({f"p:{n}": probs[:, k] for k, n in enumerate(label_names)})
        # an item whose text is a demonstration's: its teacher label saw its gold label in the prompt, so it may
        # never serve as an unbiased gold sample (select and estimate leave it out)
        cols["demo"] = prompt.demonstrations.shows(cols["text"])
        cols.update({"model": redact_uri(self.model), "demo_seed": prompt.demonstrations.seed,
                     "prompt_tokens": np.array([r.prompt_tokens or 0 for r in recs], dtype=np.int64),
                     "seconds": np.array([r.seconds for r in recs], dtype=np.float64),
                     "error": [r.error for r in recs],
                     # how P_S was made; records stored before this was kept are the teacher's exact kind
                     "p_s_method": [r.p_s_method or (self.p_s if r.error is None else None) for r in recs],
                     "observed_mass": np.array([1.0 if r.observed is None and r.error is None else
                                                math.nan if r.observed is None else r.observed for r in recs],
                                               dtype=np.float64),
                     "completion_tokens": np.array([r.completion_tokens or 0 for r in recs], dtype=np.int64),
                     "cost": np.array([math.nan if r.cost is None else r.cost for r in recs], dtype=np.float64)})
        return pd.DataFrame(cols, index=pd.RangeIndex(len(recs)))


CHUNK_ITEMS = 2048  # items per store lookup and output chunk: big enough for SQLite, small next to 100k items


class _Accumulator:
    """Running totals for the summary; keeps two int arrays per item (teacher and gold label), nothing else."""

    def __init__(self, label_names: list[str]):
        self.label_names = label_names
        self.index = {n: i for i, n in enumerate(label_names)}
        self.items = self.scored = self.failed = self.prompt_tokens = self.truncated = 0
        self.completion_tokens = self.requests = 0
        self.seconds = 0.0
        self.cost: float | None = None  # money spent on the items scored in this pass
        self.table_cost: float | None = None  # money all the pass's items cost when they were labelled
        self.max_item_cost: float | None = None  # the dearest item so far: what the next one may cost
        self.methods: dict[str, int] = {}
        self.min_observed: float | None = None
        self.counts = np.zeros(len(label_names), dtype=np.int64)
        self.pred: list[np.ndarray] = []
        self.gold: list[np.ndarray] = []

    def spend(self, batch: list[Record]) -> None:
        """Count what the batch just scored cost (tokens out, requests, money)."""
        for r in batch:
            self.completion_tokens += r.completion_tokens or 0
            self.requests += r.requests or 0
            if r.cost is not None:
                self.cost = (self.cost or 0.0) + r.cost
                self.max_item_cost = max(self.max_item_cost or 0.0, r.cost)

    def affordable(self, n: int, max_cost: float | None) -> int:
        """How many of the next ``n`` items fit in what is left of ``max_cost``, each priced as the dearest item
        so far (items go one at a time until one has cost something): the budget is passed only by what the
        items of the last batch cost above the dearest seen before them."""
        if max_cost is None:
            return n
        spent = self.cost or 0.0
        if not self.max_item_cost:
            return 1 if spent < max_cost else 0
        return max(0, min(n, int((max_cost - spent) / self.max_item_cost)))

    def add(self, frame: pd.DataFrame, *, scored: int, gold: np.ndarray | None, seconds: float) -> None:
        pred = frame["label"].map(self.index).fillna(-1).to_numpy(dtype=np.int64)
        self.items += len(frame)
        self.scored += scored
        self.failed += int(frame["error"].notna().sum())
        self.prompt_tokens += int(frame["prompt_tokens"].sum())
        self.counts += np.bincount(pred[pred >= 0], minlength=len(self.label_names))
        empty = pd.Series(dtype=float)  # frames written before these columns were kept lack them
        costs = frame.get("cost", empty).dropna()
        if len(costs):
            self.table_cost = (self.table_cost or 0.0) + float(costs.sum())
        for method, count in frame.get("p_s_method", empty).dropna().value_counts().items():
            self.methods[str(method)] = self.methods.get(str(method), 0) + int(count)
        observed = frame.get("observed_mass", empty).dropna()
        if len(observed):
            low = float(observed.min())
            self.min_observed = low if self.min_observed is None else min(self.min_observed, low)
        self.seconds = seconds
        if gold is not None:
            self.pred.append(pred.astype(np.int32))
            self.gold.append(gold.astype(np.int32))

    def summary(self) -> AnnotationSummary:
        s = AnnotationSummary(items=self.items, cached=self.items - self.scored, labelled=self.scored,
                              failed=self.failed, seconds=self.seconds, prompt_tokens=self.prompt_tokens,
                              label_counts={n: int(c) for n, c in zip(self.label_names, self.counts)},
                              truncated=self.truncated, completion_tokens=self.completion_tokens,
                              requests=self.requests, cost=self.cost, table_cost=self.table_cost,
                              p_s_methods=dict(self.methods), min_observed=self.min_observed)
        if self.truncated:
            log.warning("%d item(s) were cut to fit the model's context", self.truncated)
        if self.gold:
            from sklearn.metrics import confusion_matrix

            gold, pred = np.concatenate(self.gold), np.concatenate(self.pred)
            known = gold >= 0  # items without a gold label do not count
            gold, pred = gold[known], pred[known]
            if len(gold):
                # the metrics every table of the study uses: macro over the labels seen in gold or among the
                # teacher's labels; failed items (-1) count as misses of their gold label
                labels = list(range(len(self.label_names)))
                s.accuracy = accuracy(gold, pred)
                s.macro_f1 = macro_f1(gold, pred, labels=labels)
                s.confusion = confusion_matrix(gold, pred, labels=labels).tolist()
        return s


def redact_uri(uri: str) -> str:
    """The URI with any user:password of a server URL removed: it is what tables, configs, run records and
    reports write (credentials belong in the environment, e.g. OPENAI_API_KEY, never in files)."""
    return re.sub(r"(https?://)[^/@#\s]*@", r"\1", uri)


TEACHERS: dict[str, type[Teacher]] = {}
TEACHER_OPTIONS: dict[str, type[BaseModel] | None] = {}  # backend -> the pydantic model of its options


def register_teacher(cls: type[Teacher] | None = None, *, options: type[BaseModel] | None = None):
    """Class decorator: make a backend available under its ``backend`` name in ``--teacher`` URIs, with the
    pydantic model that validates its options (a study's ``[teachers.options]``, ``get_teacher(**options)``).
    Use bare (``@register_teacher``: the constructor's keywords are passed unchecked) or with ``options=``."""

    def register(c: type[Teacher]) -> type[Teacher]:
        if not c.backend or not re.fullmatch(r"[a-z][a-z0-9_-]*", c.backend):
            raise SilverlabelError(f"teacher class {c.__name__} needs a lower-case backend name, got {c.backend!r}")
        TEACHERS[c.backend] = c
        TEACHER_OPTIONS[c.backend] = options
        return c

    return register(cls) if cls is not None else register


def validate_options(backend: str, options: dict) -> dict:
    """The options checked against the backend's registered model: unknown keys and bad values are errors naming
    the option; returns only those that were given (the backend's own defaults stay its defaults)."""
    model = TEACHER_OPTIONS.get(backend)
    if model is None or not options:
        return dict(options)
    try:
        checked = model.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'options'}: {e['msg']}"
                             for e in exc.errors())
        raise SilverlabelError(f"teacher options for '{backend}': {problems} (valid: "
                               f"{', '.join(model.model_fields)})") from None
    return checked.model_dump(include=set(options))


class TeacherOptions(BaseModel):
    """Base of a backend's options model: unknown keys are errors, never ignored."""

    model_config = ConfigDict(extra="forbid")

    p_s: Literal["sequence", "guided"] = "sequence"
