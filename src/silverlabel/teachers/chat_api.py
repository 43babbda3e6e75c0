"""``chat:BASE_URL#MODEL``: a model behind the OpenAI Chat Completions protocol (OpenAI, Azure OpenAI, Gemini's
OpenAI-compatible endpoint, Ollama, OpenRouter, vLLM, llama-server, SGLang), through the official ``openai`` SDK.

What the protocol can express is declared here; what a given server honours is probed by the hosted teacher
(:mod:`.hosted`): the answer held to the labels by vLLM's ``structured_outputs`` choice or by a JSON schema with an
``enum`` (OpenAI's structured output); ``logprobs`` with ``top_logprobs``; ``n`` answers in one request; and
vLLM's ``logprob_token_ids`` (with ``allowed_token_ids`` and ``continue_final_message``) for the exact
``token_ids`` method. Fields OpenAI does not define travel in the SDK's ``extra_body``, so a hosted API that
refuses them says so in one probe and the next method is tried.
"""

from __future__ import annotations

import json

from ..errors import SilverlabelError
from .base import Usage, register_teacher
from .batching import BatchState
from .chat_template import SENTINEL, SPECIAL_TOKEN
from .hosted import ChatAPI, HostedOptions, HostedTeacher
from .openai_wire import TOKEN_KEY, parse_model, retry_after, snippet, token_ids_of
from .p_s_methods import Reply, Step
from .transport import ItemFailed, Transient

VLLM_FIELDS = {"structured_outputs"}  # request fields of vLLM's that OpenAI's schema lacks


def import_openai():
    try:
        import openai
    except ImportError:
        raise SilverlabelError("the chat teacher needs the openai SDK: pip install 'silverlabel[chat]'") from None
    return openai


def sdk_call(fn, sdk):
    """One SDK call, its failures sorted: 429, 5xx, timeouts and dropped connections are worth another try."""
    try:
        return fn()
    except sdk.APITimeoutError:
        raise Transient("no reply in time") from None
    except sdk.APIConnectionError as exc:
        raise Transient(f"connection failed ({type(exc.__cause__ or exc).__name__})") from None
    except sdk.APIStatusError as exc:
        status = exc.status_code
        if status == 429 or status >= 500:
            raise Transient(f"HTTP {status}", status, retry_after(exc.response.headers.get("retry-after"))) \
                from None
        raise ItemFailed(f"HTTP {status}: {snippet(str(exc.message))}", status) from None


class OpenAIChat(ChatAPI):
    can_n = True
    expresses = frozenset({"choice", "json", "logprobs", "token_ids"})

    def __init__(self, base_url: str, model: str, key: str, timeout: float):
        self.sdk = import_openai()
        self.model = model
        self.base_url = base_url
        self.client = self.sdk.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout)
        self._http = None

    def request(self, messages, *, max_tokens, temperature, n=1, seed=None, top_logprobs=None, choices=None,
                schema=None) -> dict:
        body: dict = {"model": self.model, "messages": messages, "max_completion_tokens": max_tokens,
                      "temperature": temperature}
        if n > 1:
            body["n"] = n
        if seed is not None:
            body["seed"] = seed
        if temperature > 0:
            body["top_p"] = 1.0  # sample from the model's own distribution, not a server default's nucleus
        if top_logprobs:
            body.update(logprobs=True, top_logprobs=top_logprobs)
        if choices is not None:
            body["structured_outputs"] = {"choice": list(choices)}  # vLLM's choice constraint
        elif schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": schema, "strict": True}}
        return body

    def post(self, body: dict) -> Reply:
        fields = {k: v for k, v in body.items() if k not in VLLM_FIELDS}
        extra = {k: v for k, v in body.items() if k in VLLM_FIELDS}
        if extra:
            fields["extra_body"] = extra  # fields OpenAI does not define travel outside the SDK's schema
        raw = sdk_call(lambda: self.client.chat.completions.create(**fields), self.sdk)
        return self.read(raw.model_dump())

    def read(self, raw: dict) -> Reply:
        return read_reply(raw)

    # ------------------------------------------------------------------ OpenAI's Batch API
    batch_limits = (50_000, 200 * 1024 * 1024)  # requests and input-file bytes per batch

    def batch_line_bytes(self, custom_id: str, body: dict) -> int:
        return len(json.dumps(self._line(custom_id, body)).encode()) + 1

    def _line(self, custom_id: str, body: dict) -> dict:
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}

    def submit_batch(self, requests, tag):
        lines = "".join(json.dumps(self._line(c, b)) + "\n" for c, b in requests).encode()
        upload = sdk_call(lambda: self.client.files.create(file=(f"{tag}.jsonl", lines), purpose="batch"), self.sdk)
        batch = sdk_call(lambda: self.client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
            metadata={"silverlabel": tag}), self.sdk)
        return batch.id

    def batch_state(self, batch_id):
        b = sdk_call(lambda: self.client.batches.retrieve(batch_id), self.sdk)
        counts = b.request_counts
        note = "; ".join(str(e.message) for e in (b.errors.data or [])) if b.errors else ""
        return BatchState(status=b.status, ended=b.status in ("completed", "expired", "cancelled", "failed"),
                          done=counts.completed if counts else 0, failed=counts.failed if counts else 0,
                          total=counts.total if counts else 0, note=note)

    def batch_results(self, batch_id):
        b = sdk_call(lambda: self.client.batches.retrieve(batch_id), self.sdk)
        for file_id in (b.output_file_id, b.error_file_id):
            if not file_id:
                continue
            text = sdk_call(lambda f=file_id: self.client.files.content(f).text, self.sdk)
            for line in text.splitlines():
                if not line.strip():
                    continue
                row = json.loads(line)
                response = row.get("response") or {}
                status = response.get("status_code")
                body = response.get("body")
                error = row.get("error") if isinstance(row.get("error"), dict) else {}
                if status == 200 and isinstance(body, dict):
                    yield row["custom_id"], body, None, 200
                elif error.get("code") in ("batch_expired", "batch_cancelled"):
                    yield row["custom_id"], None, None, None  # not answered: asked again
                else:  # the line's error, else the one in the reply body, else the body itself
                    detail = error or (body.get("error") if isinstance(body, dict) else None) or \
                        {"message": body}
                    message = detail.get("message") if isinstance(detail, dict) else detail
                    yield row["custom_id"], None, f"HTTP {status}: {snippet(str(message))}", status

    def find_batch(self, tag, *, since, requests, known):
        for b in self.client.batches.list(limit=100):
            if (b.metadata or {}).get("silverlabel") == tag:
                return b.id
            if b.created_at < since - 60:
                break  # the list is newest first
        return None

    # ------------------------------------------------------------------ vLLM's extensions for token_ids
    def _root(self, path: str, body: dict) -> dict:
        if self._http is None:
            self._http = self.sdk.DefaultHttpxClient(timeout=self.client.timeout)
        root = self.base_url.rstrip("/").removesuffix("/v1")
        try:
            resp = self._http.post(root + path, json=body, headers={"Authorization": f"Bearer {self.client.api_key}"})
        except Exception as exc:  # httpx's errors, whichever the SDK's client raises
            raise Transient(f"connection failed ({type(exc).__name__})") from None
        if resp.status_code != 200:
            raise ItemFailed(f"{path}: HTTP {resp.status_code}: {snippet(resp.text)}", resp.status_code)
        return resp.json()

    def tokenize(self, text: str) -> list[int]:
        return token_ids_of(self._root("/tokenize", {"model": self.model, "prompt": text,
                                                     "add_special_tokens": False}))

    def detokenize(self, ids: list[int]) -> str:
        reply = self._root("/detokenize", {"model": self.model, "tokens": ids})
        if not isinstance(reply.get("prompt"), str):
            raise ItemFailed("the detokenize reply holds no text")
        return reply["prompt"]

    def terminator(self) -> tuple[str, int] | None:
        """The chat template's end-of-turn token: what it writes right after an assistant message."""
        ids = token_ids_of(self._root("/tokenize", {"model": self.model, "add_generation_prompt": False,
                                                    "messages": [{"role": "user", "content": "x"},
                                                                 {"role": "assistant", "content": SENTINEL}]}))
        match = SPECIAL_TOKEN.match(self.detokenize(ids).partition(SENTINEL)[2])
        if match is None:
            return None
        term = self.tokenize(match.group(0))
        return (match.group(0), term[0]) if len(term) == 1 else None

    def walk(self, messages, prefix, tokens, steps):
        """Generate ``steps`` tokens after the assistant's ``prefix``, each limited to ``tokens``, reading the
        model's raw log-probability of every one of ``tokens`` at each step."""
        body = {"logprob_token_ids": list(tokens), "allowed_token_ids": list(tokens),
                "return_tokens_as_token_ids": True, "ignore_eos": True}
        if prefix:
            messages = [*messages, {"role": "assistant", "content": prefix}]
            body.update(continue_final_message=True, add_generation_prompt=False)
        fields = {"model": self.model, "messages": messages, "max_completion_tokens": steps, "temperature": 0.0,
                  "logprobs": True, "extra_body": body}
        raw = sdk_call(lambda: self.client.chat.completions.create(**fields), self.sdk).model_dump()
        choice = (raw.get("choices") or [{}])[0]
        content = ((choice.get("logprobs") or {}).get("content")) or []
        row = []
        for entry in content:
            m = TOKEN_KEY.match(str(entry.get("token")))
            found = {int(g.group(1)): t.get("logprob") for t in entry.get("top_logprobs") or []
                     if (g := TOKEN_KEY.match(str(t.get("token"))))}
            if m is None or any(t not in found for t in tokens):
                raise ItemFailed(f"the reply lacks log-probabilities of the requested tokens (got "
                                 f"{snippet(json.dumps(entry.get('top_logprobs')), 120)}); does the server support "
                                 "logprob_token_ids on chat completions?")
            row.append((int(m.group(1)), {t: float(found[t]) for t in tokens}))
        if not row:
            raise ItemFailed("the reply carries no log-probabilities")
        return row, usage_of(raw)

    def close(self) -> None:
        self.client.close()
        if self._http is not None:
            self._http.close()


def usage_of(raw: dict) -> Usage:
    u = raw.get("usage") or {}
    details = u.get("prompt_tokens_details") or {}
    return Usage(prompt_tokens=int(u.get("prompt_tokens") or 0), cached_tokens=int(details.get("cached_tokens") or 0),
                 completion_tokens=int(u.get("completion_tokens") or 0), requests=1)


def read_reply(raw: dict) -> Reply:
    """Answers and their token steps from a chat completion (its ``logprobs.content``)."""
    choices = sorted(raw.get("choices") or [], key=lambda c: c.get("index") or 0)
    usage = usage_of(raw)
    if not choices:
        raise ItemFailed(f"the reply has no choices ({snippet(json.dumps(raw))})", usage=usage)
    texts = [((c.get("message") or {}).get("content")) or "" for c in choices]
    steps = []
    for c in choices:
        content = (c.get("logprobs") or {}).get("content")
        if not content:
            steps = None
            break
        steps.append([Step(str(e.get("token") or ""), float(e.get("logprob")),
                           {str(t.get("token")): float(t.get("logprob")) for t in e.get("top_logprobs") or []})
                      for e in content])
    return Reply(texts=texts, steps=steps, usage=usage)


class ChatOptions(HostedOptions):
    """``[teachers.options]`` of a ``chat:`` teacher."""


@register_teacher(options=ChatOptions)
class ChatTeacher(HostedTeacher):
    """``chat:BASE_URL#MODEL`` — e.g. ``chat:https://api.openai.com/v1#gpt-4o-mini`` or
    ``chat:http://127.0.0.1:11434/v1#qwen2.5:7b`` (Ollama)."""

    backend = "chat"
    default_key_env = "OPENAI_API_KEY"

    def __init__(self, model: str, **options):
        super().__init__(model, **options)
        self._base_url, self._served = parse_model(model, backend="chat")

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def served_model(self) -> str:
        return self._served

    def make_api(self, key: str) -> OpenAIChat:
        return OpenAIChat(self._base_url, self._served, key, self.timeout)
