"""The teacher contract: a backend scores label strings; the base class does the rest.

A backend implements :meth:`Teacher.prepare` (see the prompt once) and :meth:`Teacher.score` (for each text, the
log-probability of every label's tokens, terminator included, as the continuation of the prompt). From those the
base class derives the full label distribution P_S(y|x), its entropy, and the label that guided decoding over the
label set would return (greedy over the token trie of the labels, exactly as vLLM's guided choice decodes). It also
owns caching, batching, progress and accounting, so every backend gets them the same way.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import pandas as pd

from ..cache import AnnotationStore, Record, text_hash
from ..errors import SilverlabelError
from ..progress import progress_bar
from .prompts import Prompt

log = logging.getLogger(__name__)


@dataclass
class Scored:
    """A backend's raw answer for one text."""

    token_logprobs: list[list[float]]  # per label: log-prob of each of its tokens (terminator last)
    prompt_tokens: int
    error: str | None = None
    choice: int | None = None  # the guided-decoding label when the backend got it from the server itself


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
    accuracy: float | None = None
    macro_f1: float | None = None

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


def distribution(token_logprobs: Sequence[Sequence[float]]) -> np.ndarray:
    """P_S over labels: each label's sequence probability, renormalised over the label set."""
    seq = np.array([sum(lp) for lp in token_logprobs], dtype=np.float64)
    seq -= seq.max()
    p = np.exp(seq)
    return p / p.sum()


def entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats; zero-probability labels contribute nothing (hand-written: one line, no library)."""
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def guided_choice(label_tokens: Sequence[Sequence[int]], token_logprobs: Sequence[Sequence[float]]) -> int:
    """The label greedy decoding constrained to the label set returns: at each step keep only the labels that
    start with the most likely allowed token. Hand-written because it must reuse the scores we already have;
    a guided-decoding library would re-run the model."""
    candidates = list(range(len(label_tokens)))
    pos = 0
    while len(candidates) > 1:
        best = max(candidates, key=lambda c: (token_logprobs[c][pos], -c))
        token = label_tokens[best][pos]
        candidates = [c for c in candidates if label_tokens[c][pos] == token]
        pos += 1
    return candidates[0]


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


class Teacher(ABC):
    """An LLM that labels texts with a fixed few-shot prompt."""

    backend: ClassVar[str] = ""

    def __init__(self, model: str, *, chat: bool = True):
        self.model = model
        self.chat = chat
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

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Free the model."""

    # ------------------------------------------------------------------ shared machinery
    def cache_key(self, prompt: Prompt) -> str:
        return store_key(prompt, chat=self.chat)

    def annotate(self, items: Sequence[str], texts: Sequence[str], prompt: Prompt, *,
                 store: AnnotationStore | None = None, batch_size: int = 16, gold: Sequence[int] | None = None,
                 description: str = "annotating") -> Annotations:
        """Label every text, reusing cached records, committing each batch as it finishes."""
        label_names = list(prompt.label_names)
        hashes = [text_hash(t) for t in texts]
        key = self.cache_key(prompt)
        cached = store.get_many(self.model_id, key, hashes) if store is not None else {}
        unique_index = {h: i for i, h in enumerate(hashes)}  # first occurrence of each distinct text
        todo = [unique_index[h] for h in dict.fromkeys(hashes) if h not in cached]
        records: dict[str, Record] = dict(cached)
        started = time.perf_counter()
        if todo:
            if self.prompt is None or self.prompt.key() != prompt.key():
                self.prepare(prompt)
                check_distinguishable(label_names, self.label_tokens)
            with progress_bar(description, total=len(todo)) as advance:
                for start in range(0, len(todo), batch_size):
                    chunk = todo[start:start + batch_size]
                    t0 = time.perf_counter()
                    scored = self.score([texts[i] for i in chunk])
                    per_item = (time.perf_counter() - t0) / len(chunk)
                    batch = [self._record(hashes[i], s, label_names, per_item) for i, s in zip(chunk, scored)]
                    if store is not None:
                        store.put_many(self.model_id, key, batch)
                    records.update({r.text_hash: r for r in batch})
                    advance(len(chunk))
        seconds = time.perf_counter() - started
        frame = self._frame(items, texts, hashes, records, label_names, prompt)
        failed = int(frame["error"].notna().sum())
        summary = AnnotationSummary(
            items=len(texts), cached=len(texts) - len(todo), labelled=len(todo), failed=failed, seconds=seconds,
            prompt_tokens=int(frame["prompt_tokens"].sum()),
            label_counts={n: int((frame["label"] == n).sum()) for n in label_names})
        if gold is not None:
            from ..metrics import accuracy, macro_f1

            pred = frame["label"].map({n: i for i, n in enumerate(label_names)}).fillna(-1).to_numpy(int)
            summary.accuracy = accuracy(np.asarray(gold), pred)
            summary.macro_f1 = macro_f1(np.asarray(gold), pred, labels=list(range(len(label_names))))
        return Annotations(frame=frame, label_names=label_names, summary=summary)

    def _record(self, h: str, scored: Scored, label_names: list[str], seconds: float) -> Record:
        if scored.error is not None:
            return Record(h, None, None, None, scored.prompt_tokens, seconds, scored.error)
        p = distribution(scored.token_logprobs)
        choice = scored.choice if scored.choice is not None else guided_choice(self.label_tokens,
                                                                                scored.token_logprobs)
        return Record(h, label_names[choice], [float(x) for x in p], entropy(p), scored.prompt_tokens, seconds)

    def _frame(self, items, texts, hashes, records, label_names, prompt) -> pd.DataFrame:
        rows = []
        nan = [math.nan] * len(label_names)
        for item, text, h in zip(items, texts, hashes):
            r = records[h]
            rows.append((item, text, r.label, r.entropy, *(r.probs or nan), self.model, prompt.demonstrations.seed,
                         r.prompt_tokens, r.seconds, r.error))
        cols = ["item", "text", "label", "entropy", *[f"p:{n}" for n in label_names], "model", "demo_seed",
                "prompt_tokens", "seconds", "error"]
        return pd.DataFrame(rows, columns=cols)


TEACHERS: dict[str, type[Teacher]] = {}


def register_teacher(cls: type[Teacher]) -> type[Teacher]:
    """Class decorator: make a backend available under its ``backend`` name in ``--teacher`` URIs."""
    TEACHERS[cls.backend] = cls
    return cls
