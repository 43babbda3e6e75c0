"""``openai:BASE_URL#MODEL``: a teacher behind any OpenAI-compatible server (vLLM, llama.cpp's servers, ...).

The teacher contract needs, for every item, the log-probability of each label's tokens as the continuation of
the prompt. The OpenAI API has no "score this continuation" call, so one of two ways is used, chosen in
:meth:`OpenAITeacher.prepare` by probing the server (or by ``scoring=``): ``auto`` tries ``token_ids``, then
``echo``, then ``next_token`` (llama-cpp-python's server, found by its ``/extras`` tokenizer, goes to
``next_token`` directly):

Each way is its own object in ``completion_scorings.py``; this module holds the server session they share
(HTTP through the transport, the tokenizer endpoints, the chat template, the terminator, context cutting) and
the guided choice.

``echo``
    ``/v1/completions`` on prompt + label (+ terminator) with ``echo=True, logprobs=1, max_tokens=1``: the echoed
    prompt log-probabilities end with the label's tokens. One request per label. vLLM serves this (it rejects
    ``max_tokens=0``, hence 1). The probe checks that the echoed log-probability of the label's first token is
    the one a generation at that point reports, because some servers shift echoed log-probabilities by a token.

``next_token``
    One ``max_tokens=1`` request per edge of the labels' token trie, with ``logit_bias`` forcing the label's next
    token. Servers that report the model's own log-probability of the sampled token (llama-cpp-python; vLLM V1,
    whose ``--logprobs-mode`` defaults to ``raw_logprobs``) then return exactly that token's log-probability; the
    probe refuses servers that report it after the bias. Chosen for llama-cpp-python's server, whose echo path
    sorts the whole vocabulary in Python for every prompt token (about 50 s for a 400-token prompt on two cores)
    and shifts echoed log-probabilities by one token when the prompt does not start with BOS. llama-server (the
    C++ one) returns no prompt log-probabilities on echo, so its echo probe fails and it lands here too (whether
    its completions logprobs then fit is unverified: the probe says so at prepare time if not).

``token_ids``
    vLLM's per-request ``logprob_token_ids``: generations that report the model's raw log-probability of each
    listed token at every step. The first request generates along the labels' token trie (``allowed_token_ids``
    limits each step to the labels' tokens, after vLLM has taken the raw log-probabilities), reading every node
    on the guided-decoding path; a second one, a list of prompts (which vLLM batches), starts such a walk at every
    node not read yet whose parent was, reading the rest (rarely, a third). Both are generations, so vLLM's
    prefix cache serves the shared prompt, where echo pays a full prefill per label (vLLM computes prompt log-probabilities outside its prefix cache). The same
    numbers as echo (checked on a real vLLM within 1e-3); chosen first by ``auto`` where the probe finds both
    fields honoured. Each extra prompt still recomputes the item's last, partly filled KV block (vLLM caches
    whole blocks only: 128 tokens by default on CPU), so a smaller ``--block-size`` makes it cheaper.

The terminator (the chat template's end-of-turn token, or EOS for the raw prompt) is scored where the server
allows it. llama-cpp-python stops at an end-of-generation token before reporting its log-probability, so there
labels are scored without it; labels where one is a prefix of another are then refused, since only the
terminator tells them apart.

Both ways need token ids, from the server's tokenizer endpoint (llama-cpp-python's ``/extras/tokenize``, or
``/tokenize`` of vLLM and llama.cpp's ``llama-server``); ``self.label_tokens`` holds the real ids, so the base
class computes the guided-decoding label. Where the server offers guided choice (vLLM's ``structured_outputs``,
formerly ``guided_choice``; llama.cpp's servers take a GBNF ``grammar`` that allows only the label strings), one
more request per item asks for it and its answer is the label.

In chat mode the prompt must be scored inside the chat template the server would apply, as the in-process
llamacpp teacher does. The template is rendered as text (by llama-server's ``/apply-template``, by vLLM's
``/tokenize`` of the messages then ``/detokenize``, or locally from ``chat_template=`` for servers that expose
neither, such as llama-cpp-python's), and sent to ``/v1/completions`` as the prompt, so the label's tokens follow
exactly the text the chat template writes.

The API key is read from an environment variable only, sent as a bearer token, and kept out of logs, error
messages, ``model_id`` and the annotation store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field

from ..errors import SilverlabelError
from .base import (
    Scored,
    Teacher,
    TeacherOptions,
    redact_uri,
    register_teacher,
)
from .chat_template import SENTINEL as _SENTINEL
from .chat_template import SPECIAL_TOKEN as _SPECIAL_TOKEN
from .chat_template import load_chat_template
from .completion_scorings import SCORINGS, CompletionScoring
from .openai_wire import (
    GUIDED_FIELDS,
    ItemFailed,
    first_choice,
    guided_value,
    import_httpx,
    most_tokens,
    parse_model,
    retry_after,
    snippet,
    token_ids_of,
)
from .prompts import Prompt
from .transport import Transient, Transport

log = logging.getLogger(__name__)

_PROBE_TEXT = "This is an example."
_SCORINGS = ("auto", "token_ids", "echo", "next_token")
_REPORTED = ("root", "max_model_len")  # what of /v1/models identifies the weights behind a served name
_CUT_MARGIN = 8  # tokens kept free when cutting a text: the cut text may tokenise a little differently in context


class OpenAIOptions(TeacherOptions):
    """``[teachers.options]`` of an ``openai:`` teacher."""

    concurrency: int = Field(8, ge=1)
    timeout: float = Field(60, gt=0)
    max_retries: int = Field(5, ge=0)
    api_key_env: str = "OPENAI_API_KEY"
    scoring: Literal["auto", "token_ids", "echo", "next_token"] = "auto"
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)  # e.g. {enable_thinking = false}
    guided: Literal["auto", "server", "local"] = "auto"


@register_teacher(options=OpenAIOptions)
class OpenAITeacher(Teacher):
    """``openai:BASE_URL#MODEL`` — a model served over the OpenAI completions API, scored through logprobs."""

    backend = "openai"

    def __init__(self, model: str, *, chat: bool = True, concurrency: int = 8, timeout: float = 60,
                 max_retries: int = 5, api_key_env: str = "OPENAI_API_KEY", scoring: str = "auto",
                 chat_template: str | None = None, chat_template_kwargs: dict[str, Any] | None = None,
                 guided: str = "auto", p_s: str = "sequence"):
        super().__init__(model, chat=chat, p_s=p_s)
        self.base_url, self.served_model = parse_model(model)
        if concurrency < 1:
            raise SilverlabelError(f"concurrency must be 1 or more, got {concurrency}")
        if not timeout > 0:
            raise SilverlabelError(f"timeout must be positive seconds, got {timeout}")
        if max_retries < 0:
            raise SilverlabelError(f"max_retries must be 0 or more, got {max_retries}")
        if scoring not in _SCORINGS:
            raise SilverlabelError(f"scoring '{scoring}' is unknown; choose one of {', '.join(_SCORINGS)}")
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.api_key_env = api_key_env
        self.scoring = scoring
        self.chat_template = chat_template
        self.chat_template_kwargs = dict(chat_template_kwargs or {})  # passed to the template (all three ways)
        if guided not in ("auto", "server", "local"):
            raise SilverlabelError(f"guided '{guided}' is unknown; choose one of auto, server, local")
        self.guided = guided
        self.root_url = self.base_url.removesuffix("/v1")
        self.mode: str | None = None  # "token_ids", "echo" or "next_token", once prepared
        self.terminator: str | None = None  # its text, when the labels are scored with it
        self.guided_field: str | None = None  # the request field that gives guided choice on this server
        self._client = None
        self.transport = Transport(concurrency=concurrency, max_retries=max_retries)
        self._local_template: Callable[..., str] | None = None
        self._eos_text = ""
        self._tokenizer: str | None = None
        self._auto_tokens: list[int] = []
        self._rendered = ""
        self.way: CompletionScoring | None = None  # the scoring way, once prepared
        self._info: dict | None = None  # the server's /v1/models entry for the served model
        self._text_budget: int | None = None  # most tokens an item's text may have (from max_model_len)

    @property
    def model_id(self) -> str:
        """The served name and URL, plus a hash of what the server reports about the model behind that name
        (vLLM's ``root`` and ``max_model_len`` in /v1/models), so new weights behind the same name are not read
        from the cache. Servers that report neither (llama-cpp-python) are identified by name and URL alone."""
        base = f"openai:{self.served_model}@{redact_uri(self.base_url)}"
        info = self._model_info()
        reported = {k: info[k] for k in _REPORTED if k in info}
        if not reported:
            return base
        return base + "~" + hashlib.sha256(json.dumps(reported, sort_keys=True).encode()).hexdigest()[:12]

    def _model_info(self) -> dict:
        """The server's /v1/models entry for the served name ({} when it lists none), fetched once. An
        unreachable server gives {} without remembering it: prepare() reports that clearly, and nothing can be
        labelled without the server anyway."""
        if self._info is None:
            httpx = import_httpx()
            try:
                resp = self._http().get(self.base_url + "/models")
            except httpx.TransportError:
                return {}
            data = {}
            if resp.status_code == 200:
                try:
                    data = resp.json()
                except ValueError:
                    pass
            entries = data.get("data", []) if isinstance(data, dict) else []
            self._info = next((e for e in entries if isinstance(e, dict) and e.get("id") == self.served_model), {})
        return self._info

    def scoring_key(self, prompt: Prompt) -> str:
        """How this server's labels are scored changes them: echo or next token, with or without the terminator,
        its guided choice or the local one, and the exact text the chat template rendered. Known only after
        probing the server, so this prepares the prompt (a few requests) when it is not yet."""
        if self.mode is None or self.prompt is None or self.prompt.key() != prompt.key():
            self.prepare(prompt)
        rendered = hashlib.sha256(self._rendered.encode("utf-8")).hexdigest()[:12]
        return f"{self.mode}:{'term' if self.terminator else 'noterm'}:{self.guided_field or 'local'}:{rendered}"

    # ------------------------------------------------------------------ HTTP
    def _http(self):
        if self._client is None:
            httpx = import_httpx()
            # local servers (vLLM, llama.cpp) need no key, but the header must still hold something
            key = os.environ.get(self.api_key_env) or "EMPTY"
            self.transport.secrets = [key]
            self._client = httpx.Client(timeout=self.timeout, headers={"Authorization": f"Bearer {key}"},
                                        limits=httpx.Limits(max_connections=self.concurrency + 2))
        return self._client

    def redact(self, text: str) -> str:
        self._http()  # the key is known once the client is made
        return self.transport.redact(text)

    def _post(self, url: str, body: dict, *, retries: int | None = None) -> dict:
        """POST JSON through the transport: 429 (after its Retry-After), 5xx, timeouts and connection errors are
        retried; any other failure, or an unusable reply, raises :class:`ItemFailed`."""
        httpx = import_httpx()
        client = self._http()

        def attempt() -> dict:
            try:
                resp = client.post(url, json=body)
            except httpx.TimeoutException:
                raise Transient(f"no reply within {self.timeout:g} s") from None
            except httpx.TransportError as exc:
                raise Transient(f"connection failed ({type(exc).__name__})") from None
            status = resp.status_code
            if status < 300:
                try:
                    data = resp.json()
                except ValueError:
                    raise ItemFailed(f"{url}: the reply is not JSON: {snippet(resp.text)}", status) from None
                if not isinstance(data, dict):
                    raise ItemFailed(f"{url}: the reply is not a JSON object", status)
                return data
            if status != 429 and status < 500:
                raise ItemFailed(f"{url}: HTTP {status}: {snippet(resp.text)}", status)
            wait = retry_after(resp.headers.get("retry-after")) if status == 429 else None
            raise Transient(f"HTTP {status}", status, wait)

        return self.transport.call(attempt, what=url, retries=retries)

    def complete(self, prompt_text: str | list[str], *, retries: int | None = None, **fields) -> dict:
        body = {"model": self.served_model, "prompt": prompt_text, "temperature": 0, **fields}
        if self.chat:
            # the rendered chat template already holds BOS; vLLM would add another (other servers ignore this)
            body["add_special_tokens"] = False
        return self._post(self.base_url + "/completions", body, retries=retries)

    # ------------------------------------------------------------------ tokenizer and template
    def _detect_tokenizer(self) -> None:
        """Find the tokenize endpoint: llama-cpp-python's, then the /tokenize of vLLM and llama-server."""
        for kind in ("extras", "root"):
            self._tokenizer = kind
            try:
                if self._tokenize_raw("Hello world"):
                    # llama-cpp-python's endpoint adds BOS when the model asks for it: learn what it adds
                    self._auto_tokens = self._tokenize_raw("") if kind == "extras" else []
                    return
            except ItemFailed as exc:
                if exc.unreachable:
                    raise SilverlabelError(f"{self.base_url}: the server cannot be reached: {exc}; is it running, "
                                           "and is BASE_URL right?") from None
                if exc.status in (401, 403):
                    raise SilverlabelError(
                        f"{self.base_url}: HTTP {exc.status}, the server refused the API key; set the environment "
                        f"variable {self.api_key_env} to the key it expects") from None
                log.debug("no %s tokenize endpoint: %s", kind, self.redact(str(exc)))
        self._tokenizer = None
        raise SilverlabelError(
            f"{self.base_url}: the server offers no tokenize endpoint (/tokenize of vLLM or llama-server, "
            "/extras/tokenize of llama-cpp-python), which label scoring needs for token ids")

    def _tokenize_raw(self, text: str) -> list[int]:
        if self._tokenizer == "extras":
            return token_ids_of(self._post(self.root_url + "/extras/tokenize",
                                         {"model": self.served_model, "input": text}, retries=0))
        # one body both servers read: vLLM takes prompt/add_special_tokens, llama-server content/add_special
        return token_ids_of(self._post(self.root_url + "/tokenize", {
            "model": self.served_model, "prompt": text, "content": text, "add_special_tokens": False,
            "add_special": False, "parse_special": True}, retries=0))

    def tokenize(self, text: str) -> list[int]:
        ids = self._tokenize_raw(text)
        n = len(self._auto_tokens)
        return ids[n:] if n and ids[:n] == self._auto_tokens else ids

    def detokenize(self, ids: list[int]) -> str:
        if self._tokenizer == "extras":
            reply = self._post(self.root_url + "/extras/detokenize", {"model": self.served_model, "tokens": ids},
                               retries=0)
        else:
            reply = self._post(self.root_url + "/detokenize", {"model": self.served_model, "tokens": ids},
                               retries=0)
        text = next((reply[k] for k in ("text", "prompt", "content") if isinstance(reply.get(k), str)), None)
        if text is None:
            raise ItemFailed(f"the detokenize reply holds no text ({snippet(json.dumps(reply))})")
        return text

    def _render_chat(self, messages: list[dict], generation: bool) -> str:
        """The chat template applied to messages, as text: locally when given, else by the server."""
        if self._local_template is not None:
            return self._local_template(messages, generation, **self.chat_template_kwargs)
        extra = {"chat_template_kwargs": self.chat_template_kwargs} if self.chat_template_kwargs else {}
        try:  # llama-server
            reply = self._post(self.root_url + "/apply-template",
                               {"messages": messages, "add_generation_prompt": generation, **extra}, retries=0)
            if isinstance(reply.get("prompt"), str):
                return reply["prompt"]
        except ItemFailed as exc:
            log.debug("no /apply-template: %s", self.redact(str(exc)))
        try:  # vLLM: tokenize the messages through its template, then back to text
            reply = self._post(self.root_url + "/tokenize", {
                "model": self.served_model, "messages": messages, "add_generation_prompt": generation, **extra},
                retries=0)
            ids = token_ids_of(reply)
            reply = self._post(self.root_url + "/detokenize", {"model": self.served_model, "tokens": ids},
                               retries=0)
            if isinstance(reply.get("prompt"), str):
                return reply["prompt"]
        except ItemFailed as exc:
            log.debug("no /tokenize with messages: %s", self.redact(str(exc)))
        raise SilverlabelError(
            f"{self.base_url}: the server does not expose its chat template (llama-server's /apply-template or "
            "vLLM's /tokenize with messages); pass chat_template= (a .gguf file, a shipped model name, a "
            "tokenizer_config.json or a Jinja template) or use the raw prompt (chat=False)")

    def _render(self, prompt: Prompt) -> str:
        body = prompt.render(_SENTINEL)
        rendered = self._render_chat([{"role": "user", "content": body}], True) if self.chat else body
        if rendered.count(_SENTINEL) != 1:
            raise SilverlabelError("the chat template lost or repeated the item's text; use chat=False")
        return rendered

    def _context(self, text: str) -> str:
        return self._rendered.replace(_SENTINEL, text, 1)

    def _find_terminator(self) -> tuple[str, int] | None:
        """The token that ends an answer: the chat template's end-of-turn (what it writes right after an
        assistant message), or EOS for the raw prompt when known; it must be one token."""
        if self.chat:
            done = self._render_chat([{"role": "user", "content": "x"},
                                      {"role": "assistant", "content": _SENTINEL}], False)
            match = _SPECIAL_TOKEN.match(done.partition(_SENTINEL)[2])
            if match is None:
                # llama-server renders a trailing assistant message as a prefill, left open for the model to go
                # on; a user turn after it makes the template close the assistant's turn
                done = self._render_chat([{"role": "user", "content": "x"}, {"role": "assistant", "content":
                                          _SENTINEL}, {"role": "user", "content": "y"}], False)
                match = _SPECIAL_TOKEN.match(done.partition(_SENTINEL)[2])
            text = match.group(0) if match else ""
        else:
            text = self._eos_text
        if not text:
            return None
        ids = self.tokenize(text)
        if len(ids) != 1:
            log.info("the terminator %r is not one token for this model; labels are scored without it", text)
            return None
        return text, ids[0]

    # ------------------------------------------------------------------ preparing
    def prepare(self, prompt: Prompt) -> None:
        """Render the prompt, find the tokenizer, terminator and scoring way, and check them on one probe item
        (the first demonstration); a server that cannot score labels is an error here, not one per item."""
        names = list(prompt.label_names)
        self.mode = None  # until this prompt is ready, score() refuses rather than mixing two prompts' state
        if self.chat and self.chat_template and self._local_template is None:
            self._local_template, self._eos_text = load_chat_template(self.chat_template)
        elif not self.chat and self.chat_template:
            self._eos_text = load_chat_template(self.chat_template)[1]
        try:
            self._detect_tokenizer()
            self._rendered = self._render(prompt)
            lead = "" if self.chat else " "  # the raw prompt ends "Label:", so the answer starts with a space
            term = self._find_terminator()
            demos = prompt.demonstrations.examples
            context = self._context(demos[0][0] if demos else _PROBE_TEXT)
            mode = self.scoring
            if mode == "auto":
                mode = "next_token" if self._tokenizer == "extras" else "token_ids"
            fallbacks = list(SCORINGS)  # token_ids, then echo, then next_token, which every server allows
            for name in fallbacks[fallbacks.index(mode):]:
                way = SCORINGS[name](self, self.needed_nodes)
                try:
                    way.prepare(names, lead, term, context)
                    break
                except ItemFailed as exc:
                    if self.scoring == name or name == fallbacks[-1]:
                        raise
                    log.info("%s: %s scoring unusable (%s); trying the next way", self.model_id, name,
                             self.redact(str(exc)))
            self.way, self.mode = way, way.name
            self.terminator, self.label_tokens = way.terminator, way.label_tokens
            self._text_budget = self._budget()
            # token_ids reads the labels' tokens from the very generation step a guided choice would take, so the
            # greedy choice over them is computed from those numbers (base.guided_choice) without one more
            # request per item; "server" asks the server anyway (its grammar also allows other tokenisations)
            local = self.guided == "local" or (self.guided == "auto" and self.mode == "token_ids")
            self.guided_field = None if local else self._probe_guided(context)
        except ItemFailed as exc:
            raise SilverlabelError(f"teacher {self.model_id}: {self.redact(str(exc))}") from None
        log.info("%s: scoring by %s, terminator %s, guided choice %s, %d request(s) at a time", self.model_id,
                 self.mode, repr(self.terminator) if self.terminator else "none",
                 self.guided_field or "computed locally", self._workers())
        self._choices = [lead + n for n in names]
        self.prompt = prompt

    def _budget(self) -> int | None:
        """Tokens left for an item's text in the server's context (``max_model_len``), after the prompt, the
        longest label and the generated token; None when the server does not say."""
        limit = self._model_info().get("max_model_len")
        if not isinstance(limit, int) or isinstance(limit, bool):
            return None
        overhead = len(self.tokenize(self._context("")))
        budget = limit - overhead - max(len(ids) for ids in self.label_tokens) - 1 - _CUT_MARGIN
        if budget < 1:
            raise SilverlabelError(f"{self.base_url}: the prompt ({overhead} tokens) leaves no room for an item "
                                   f"within max_model_len={limit}; use fewer or shorter demonstrations")
        return budget

    def _fit(self, text: str) -> tuple[str, bool]:
        """The text, cut (its beginning kept) to fit the server's context when it would not. A token covers at
        least one byte, so only texts with more UTF-8 bytes than the budget are tokenised to check."""
        budget = self._text_budget
        if budget is None or len(text.encode("utf-8")) <= budget:
            return text, False
        ids = self.tokenize(text)
        if len(ids) <= budget:
            return text, False
        log.info("%s: an item of %d tokens was cut to %d to fit max_model_len", self.model_id, len(ids), budget)
        return self.detokenize(ids[:budget]), True

    def _probe_guided(self, context: str) -> str | None:
        """Whether the server constrains a generation to a list of choices; nonsense choices make an ignored
        field visible (the output would not be one of them)."""
        fake = ["zebra-quill-7", "mango-orbit-3"]
        for field in GUIDED_FIELDS:
            try:  # room for one token per byte: a constrained model may spell a choice in small pieces
                reply = self.complete(context, max_tokens=most_tokens(fake), retries=0,
                                       **{field: guided_value(field, fake)})
                text = first_choice(reply).get("text")
            except ItemFailed as exc:
                log.debug("no %s: %s", field, self.redact(str(exc)))
                continue
            if isinstance(text, str) and text.strip() in fake:
                return field
        return None

    # ------------------------------------------------------------------ scoring
    def score(self, texts: Sequence[str]) -> list[Scored]:
        if self.mode is None:
            raise SilverlabelError("prepare(prompt) must be called before score()")
        if not texts:
            return []
        return self.transport.map(self._score_item, list(texts), workers=self._workers())

    def _workers(self) -> int:
        """llama-cpp-python's server runs one request at a time over one KV cache: items interleaved there only
        evict each other's prompts (three times slower measured), so its items go one after another."""
        return 1 if self._tokenizer == "extras" else self.concurrency

    def _score_item(self, text: str) -> Scored:
        try:
            text, cut = self._fit(text)
            context = self._context(text)
            scored = self.way.score(context)
            if self.guided_field is not None:
                scored.choice = self._guided(context)
            scored.truncated = cut
            return scored
        except ItemFailed as exc:
            return Scored(token_logprobs=[], prompt_tokens=0, error=self.redact(str(exc)))

    def _guided(self, context: str) -> int:
        """The server's own guided choice over the labels; anything else is the item's error, never a label."""
        value = guided_value(self.guided_field, self._choices)
        text = first_choice(self.complete(context, max_tokens=most_tokens(self._choices),
                                            **{self.guided_field: value})).get("text")
        if isinstance(text, str):
            for candidates in (self._choices, [c.strip() for c in self._choices]):
                for answer in (text, text.strip()):
                    if answer in candidates:
                        return candidates.index(answer)
        raise ItemFailed(f"guided choice returned {text!r}, which is not one of the labels")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
