"""The way every remote teacher reaches its server: concurrency, retries that honour Retry-After, rate limits,
per-item errors and the API key kept out of every message.

A backend wraps one request in an *attempt*: a function that returns the reply, raises :class:`Transient` for
what is worth another try (429, 5xx, a timeout, a dropped connection) or :class:`ItemFailed` for what is not.
:meth:`Transport.call` retries the first with exponential backoff and jitter (a 429's Retry-After wins), and a
request that still fails ends as that item's error, never as an exception for the batch. Hand-written: the
SDKs' own retries (``openai``, ``anthropic``) cannot share one rate budget across threads or report a
per-item failure, and tenacity would still need the Retry-After reading and the rate window below.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class ItemFailed(Exception):
    """A request failed for good or its reply cannot be used; the message becomes the item's error."""

    def __init__(self, message: str, status: int | None = None, *, unreachable: bool = False, usage=None):
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable  # no HTTP reply at all: connection refused, timed out
        self.usage = usage  # what the item had cost before it failed (a reply paid for but unusable)


class Transient(Exception):
    """One attempt failed in a way another attempt may not: ``wait`` is the server's Retry-After, if it gave one."""

    def __init__(self, why: str, status: int | None = None, wait: float | None = None):
        super().__init__(why)
        self.status = status
        self.wait = wait


class RateWindow:
    """At most ``requests_per_minute`` request starts and ``tokens_per_minute`` tokens in any 60 s: a sliding
    window shared by the threads of one teacher. A request larger than the whole token budget still goes, alone."""

    def __init__(self, requests_per_minute: int | None = None, tokens_per_minute: int | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._sent: collections.deque[tuple[float, int]] = collections.deque()  # (start, tokens)

    def acquire(self, tokens: int = 0) -> float:
        """Wait until one more request of ``tokens`` fits; returns the seconds waited."""
        if self.rpm is None and self.tpm is None:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and now - self._sent[0][0] >= 60.0:
                    self._sent.popleft()
                wait = 0.0
                if self.rpm is not None and len(self._sent) >= self.rpm:
                    wait = 60.0 - (now - self._sent[len(self._sent) - self.rpm][0])
                if self.tpm is not None and self._sent:
                    used = sum(t for _, t in self._sent)
                    if used + tokens > self.tpm:
                        # the oldest entries whose expiry frees enough tokens decide the wait
                        freed = 0
                        for start, t in self._sent:
                            freed += t
                            if used - freed + tokens <= self.tpm:
                                wait = max(wait, 60.0 - (now - start))
                                break
                        else:
                            wait = max(wait, 60.0 - (now - self._sent[-1][0]))
                if wait <= 0:
                    self._sent.append((now, tokens))
                    return waited
            self._sleep(wait)
            waited += wait


class Transport:
    """Retries, rate limits, concurrency and redaction for one remote teacher (see the module docstring)."""

    backoff_base = 0.5  # seconds before the first retry, doubling after each; tests lower it
    backoff_cap = 30.0
    retry_after_cap = 120.0  # a Retry-After longer than this is clipped: a run should not stall for hours

    def __init__(self, *, concurrency: int = 8, max_retries: int = 5, requests_per_minute: int | None = None,
                 tokens_per_minute: int | None = None):
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.window = RateWindow(requests_per_minute, tokens_per_minute)
        self.secrets: list[str] = []  # values that must never appear in a message (the API key)
        self._random = random.Random()  # jitter only; never the global generator

    def redact(self, text: str) -> str:
        """Servers may quote the request back in an error body; the key must not travel on from there."""
        for secret in self.secrets:
            if len(secret) >= 4 and secret != "EMPTY":
                text = text.replace(secret, "[api key]")
        return text

    def call(self, attempt: Callable[[], T], *, what: str, retries: int | None = None, tokens: int = 0) -> T:
        """``attempt()`` until it succeeds, retrying :class:`Transient` failures; anything else it raises (an
        :class:`ItemFailed`) ends at once. Each try waits its turn in the rate window first."""
        retries = self.max_retries if retries is None else retries
        for n in range(retries + 1):
            self.window.acquire(tokens)
            try:
                return attempt()
            except Transient as exc:
                if n == retries:
                    raise ItemFailed(self.redact(f"{what}: {exc}; still failing after {n + 1} attempt(s)"),
                                     exc.status, unreachable=exc.status is None) from None
                wait = exc.wait
                if wait is None:
                    step = min(self.backoff_cap, self.backoff_base * 2 ** n)
                    wait = step / 2 + self._random.uniform(0, step / 2)
                wait = min(wait, self.retry_after_cap)
                log.warning("%s: %s; retry %d of %d in %.2f s", what, self.redact(str(exc)), n + 1, retries, wait)
                time.sleep(wait)
            except ItemFailed as exc:
                raise type(exc)(self.redact(str(exc)), exc.status, unreachable=exc.unreachable,
                                usage=exc.usage) from None
        raise AssertionError("unreachable")

    def map(self, fn: Callable[[R], T], items: Sequence[R], *, workers: int | None = None) -> list[T]:
        """``fn`` over ``items`` on up to ``concurrency`` threads, results in order."""
        if not items:
            return []
        workers = min(workers or self.concurrency, len(items))
        if workers == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, items))
