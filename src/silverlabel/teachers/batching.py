"""A hosted teacher's labels through its provider's batch API (``batch = true``: OpenAI's Batch API, Anthropic's
Message Batches), at the batch price, submitted once and resumed after any crash.

The P_S methods stay as they are: each item is scored by the same method code as a synchronous run, but every
request the method makes goes to a *replay* (:class:`_Replay`), which answers it from the batch results the store
holds, or notes the request and gives a blank reply (that pass's answer is thrown away). A first pass over the
uncached items collects every request they need (the k answers of ``sample`` on an API without ``n`` included);
they go out in batches split at the provider's limits; when the batches have ended, a second pass scores each item
from its replies: the same readers on the same reply bodies, so the same label and P_S as a synchronous request
that got that reply. ``token_ids`` is not offered in a batch (each trie walk starts where the last one
branched), nor do the providers' batch APIs serve it.

What the store records (:mod:`..cache`), and why nothing is paid twice: each batch is written under a local id with
its requests *before* it is submitted and renamed to the provider's id after; a rerun first looks for any batch a
killed process submitted without naming (OpenAI by the batch's metadata, Anthropic by its creation time and size),
then polls every open batch to its end and reads its results, and only then submits what no batch holds. A request
the provider left unanswered (the batch expired or was cancelled) is asked again; a failed line is that item's
counted failure, retried by the next run as in a synchronous run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ..cache import AnnotationStore, BatchRow
from ..errors import SilverlabelError
from ..progress import progress_bar
from .base import BudgetReached, Scored, ScoredElsewhere, Usage
from .p_s_methods import Reply
from .prompts import Prompt
from .transport import ItemFailed

log = logging.getLogger(__name__)

MAX_ROUNDS = 4  # batches submitted for one item in one run at most (an expired batch's requests go again)


@dataclass
class BatchState:
    """A provider batch as last polled: its status in the provider's words, whether it has ended (completed,
    expired, cancelled or failed), and its line counts."""

    status: str
    ended: bool
    done: int
    failed: int
    total: int
    note: str = ""  # the provider's reason, for a batch that failed as a whole


def body_key(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


class _Replay:
    """Answers one item's requests from the recorded batch results; notes the ones no result holds. A request is
    named by the item, its body and how many identical bodies came before it in the item (Anthropic's k samples
    are k identical requests)."""

    def __init__(self, api, h: str, answers: dict[str, tuple]):
        self.api, self.h, self.answers = api, h, answers
        self.seen: dict[str, int] = {}
        self.missing: list[tuple[str, dict]] = []

    def __call__(self, body: dict) -> Reply:
        key = body_key(body)
        n = self.seen.get(key, 0)
        self.seen[key] = n + 1
        cid = f"{self.h}-{key}-{n}"
        reply, error, status = self.answers.get(cid, (None, None, None))
        if reply is not None:
            return self.api.read(reply)
        if error is not None:
            raise ItemFailed(error, status)
        self.missing.append((cid, body))
        return Reply(texts=[""] * int(body.get("n", 1)), steps=None, usage=Usage())


def run_batches(teacher, texts: Sequence[str], prompt: Prompt, store: AnnotationStore, *,
                description: str = "annotating") -> ScoredElsewhere:
    """Every distinct uncached text of ``texts`` labelled through ``teacher``'s batch API and stored (its record,
    or its failure); what the annotation pass then counts as labelled in this run."""
    if teacher.method is None or teacher.prompt is None or teacher.prompt.key() != prompt.key():
        teacher.prepare(prompt)
    model, key = teacher.model_id, teacher.cache_key(prompt)
    label_names = list(prompt.label_names)
    todo, failed_before = store.to_label(model, key, texts)
    # the failures' answered requests are forgotten, so they are asked again as a synchronous run asks again;
    # an item with replies but no record yet (a process killed between reading a batch and storing its records)
    # keeps them, and is scored from them without paying again
    store.retry_failed_requests(model, key, failed_before)
    elsewhere = ScoredElsewhere(hashes=set())
    started = time.perf_counter()
    committed = 0.0  # this run's spend: replies read, and the estimated price of what it submitted
    over_budget = 0
    for round_ in range(MAX_ROUNDS + 1):
        _finish_open(teacher, store, model, key, description)
        answers = store.batch_answers(model, key, todo)
        new: list[tuple[str, list[tuple[str, dict]]]] = []
        records = []
        for h, text in todo.items():
            replay = _Replay(teacher.api, h, answers)
            teacher._replay = replay
            try:
                scored = teacher._score_item(text)
            finally:
                teacher._replay = None
            if replay.missing:
                new.append((h, replay.missing))
            else:
                records.append(teacher._record(h, scored, label_names, 0.0))
        if records:
            store.put_many(model, key, records)
            elsewhere.hashes.update(r.text_hash for r in records)
            committed += sum(r.cost or 0.0 for r in records)
            for r in records:
                del todo[r.text_hash]
        if not new or round_ == MAX_ROUNDS:
            break
        new, over_budget = _affordable(teacher, prompt, new, todo, committed)
        if not new:
            break
        committed += sum(price for _, _, price in new)
        _submit(teacher, store, model, key, [(h, reqs) for h, reqs, _ in new])
    if todo and not over_budget:  # asked MAX_ROUNDS times and never answered
        failed = []
        for h in todo:
            scored = Scored([], 0, error=f"no reply after {MAX_ROUNDS} batches (each expired or was cancelled "
                            "before reaching it); rerun to submit it again")
            failed.append(teacher._record(h, scored, label_names, 0.0))
        store.put_many(model, key, failed)
        elsewhere.hashes.update(todo)
    elsewhere.seconds = time.perf_counter() - started
    if over_budget:
        raise BudgetReached(f"{model}: max_cost {teacher.max_cost:g}: {over_budget} item(s) not submitted, as their "
                            f"batch price (estimated at its most) would pass it; {len(elsewhere.hashes)} labelled "
                            "this run are in the store; raise max_cost and rerun to label the rest")
    return elsewhere


def _affordable(teacher, prompt: Prompt, new, todo: dict[str, str], committed: float):
    """The items whose requests fit in what is left of ``max_cost``, each priced at its most before it is sent
    (prompt tokens counted, output tokens at the method's maximum, at the batch price), and how many do not."""
    if teacher.max_cost is None:
        return [(h, reqs, 0.0) for h, reqs in new], 0
    counter, _ = teacher._token_counter(prompt)
    per_request = teacher.method.output_tokens(teacher) / max(1, teacher.method.requests_per_item(teacher))
    out, left = [], teacher.max_cost - committed
    for h, reqs in new:
        messages = prompt.messages(todo[h], teacher.layout)
        usage = Usage(prompt_tokens=counter(messages) * len(reqs),
                      completion_tokens=int(per_request * len(reqs)), requests=len(reqs))
        price = teacher.cost(usage) or 0.0
        if price > left:
            break
        left -= price
        out.append((h, reqs, price))
    return out, len(new) - len(out)


def _submit(teacher, store: AnnotationStore, model: str, key: str, new) -> None:
    """The requests as batches within the provider's limits (an item's requests in one batch), each recorded
    before it is submitted."""
    api = teacher.api
    cap_n, cap_bytes = api.batch_limits
    if teacher.options.batch_max_requests:
        cap_n = min(cap_n, teacher.options.batch_max_requests)
    batch: list[tuple[str, str, dict]] = []
    size = 0
    for h, reqs in new:
        need = sum(api.batch_line_bytes(cid, body) for cid, body in reqs)
        if need > cap_bytes or len(reqs) > cap_n:
            raise SilverlabelError(f"{model}: one item needs {len(reqs)} requests of {need} bytes, more than one "
                                   f"batch takes ({cap_n} requests, {cap_bytes} bytes); shorten the prompt or "
                                   "lower samples")
        if batch and (len(batch) + len(reqs) > cap_n or size + need > cap_bytes):
            _submit_one(teacher, store, model, key, batch)
            batch, size = [], 0
        batch += [(cid, h, body) for cid, body in reqs]
        size += need
    if batch:
        _submit_one(teacher, store, model, key, batch)


def _submit_one(teacher, store: AnnotationStore, model: str, key: str, batch: list[tuple[str, str, dict]]) -> None:
    tag = uuid.uuid4().hex[:16]
    local = store.record_batch(model, key, tag, [(cid, h) for cid, h, _ in batch], time.time())
    try:
        # no retry: a submission that timed out may have been made, and a rerun looks for it first
        batch_id = teacher.transport.call(lambda: teacher.api.submit_batch([(c, b) for c, _, b in batch], tag),
                                          what=model, retries=0)
    except ItemFailed as exc:
        if exc.status is not None and exc.status < 500:  # refused: nothing was submitted
            store.name_batch(local, None, time.time())
            raise SilverlabelError(f"{model}: the batch of {len(batch)} requests was refused ({exc})") from None
        raise SilverlabelError(f"{model}: submitting a batch of {len(batch)} requests failed ({exc}); it may have "
                               "been made: rerun, which looks for it before submitting again") from None
    store.name_batch(local, batch_id, time.time())
    log.info("%s: batch %s submitted (%d requests)", model, batch_id, len(batch))


def _finish_open(teacher, store: AnnotationStore, model: str, key: str, description: str) -> None:
    """Every batch the store holds open for this model and prompt: found (if a killed process submitted it
    without recording its id), polled to its end, and its results read into the store."""
    for row in store.batches(model, key, open_only=True):
        batch_id = row.batch_id
        if not row.submitted:
            known = {b.batch_id for b in store.batches()}
            found = teacher.transport.call(lambda r=row: teacher.api.find_batch(
                r.tag, since=r.created, requests=r.requests, known=known), what=model)
            store.name_batch(row.batch_id, found, time.time())
            if found is None:
                log.warning("%s: a batch recorded as being submitted (%d requests) is not at the provider: it was "
                            "never made; its requests go out again", model, row.requests)
                continue
            batch_id = found
        state = _wait(teacher, store, row, batch_id, description)
        results = _call(teacher, store, row, batch_id, lambda: list(teacher.api.batch_results(batch_id)))
        # a batch failed as a whole (its input refused): every request it left unanswered is a failure
        why = f"the batch failed ({state.note or 'no reason given'})" if state.status == "failed" else None
        answered, failed, unanswered = store.finish_batch(batch_id, results, time.time(), unanswered_error=why)
        log.info("%s: batch %s %s: %d replies, %d failed, %d unanswered (asked again)", model, batch_id,
                 state.status, answered, failed, unanswered)


def _call(teacher, store: AnnotationStore, row: BatchRow, batch_id: str, fn):
    try:
        return teacher.transport.call(fn, what=row.model)
    except ItemFailed as exc:
        if exc.status in (403, 404):
            raise SilverlabelError(
                f"batch {batch_id} of {row.model}, recorded in {store.path}: the API does not know it ({exc}); made "
                f"with another key or account? `silverlabel batches --cache {store.path} --forget {batch_id}` drops "
                "it, and its unanswered requests are then submitted again") from None
        raise SilverlabelError(f"batch {batch_id} of {row.model}: {exc}; rerun to go on waiting for it") from None


def _wait(teacher, store: AnnotationStore, row: BatchRow, batch_id: str, description: str) -> BatchState:
    """Poll until the batch ends (1 s, doubling up to ``batch_poll_max``; a ``batch_poll_max`` under 1 s is the
    wait from the first poll on), its progress shown and stored."""
    delay, last, shown = min(1.0, teacher.options.batch_poll_max), None, 0
    since = row.created
    with progress_bar(f"{description}: batch {batch_id}", total=row.requests) as advance:
        while True:
            state = _call(teacher, store, row, batch_id, lambda: teacher.api.batch_state(batch_id))
            store.update_batch(batch_id, state.status, state.done, state.failed, time.time())
            moved = min(row.requests, state.done + state.failed)
            if moved > shown:
                advance(moved - shown)
                shown = moved
            if state.status != last:
                log.info("%s: batch %s is %s (%d of %d done, %d failed, %.0f s since submitted)", row.model,
                         batch_id, state.status, state.done, state.total or row.requests, state.failed,
                         time.time() - since)
                last = state.status
            if state.ended:
                return state
            time.sleep(delay)
            delay = min(2 * delay, teacher.options.batch_poll_max)
