"""``anthropic:MODEL``: a model behind Anthropic's Messages API, through the official ``anthropic`` SDK (the
``base_url`` option points it at a compatible server, e.g. vLLM's ``/v1/messages``).

The Messages API returns no log-probabilities and has no ``n``, ``seed`` or ``logit_bias``, so P_S comes from
k sampled answers (k requests), the model's stated probabilities, or the answer alone; the answer is held to the
labels by the prompt's instruction, and an answer outside them is the item's failure.
"""

from __future__ import annotations

import json
import logging

from pydantic import Field

from ..errors import SilverlabelError
from .base import Usage, register_teacher
from .batching import BatchState
from .chat_api import sdk_call
from .hosted import ChatAPI, HostedOptions, HostedTeacher
from .openai_wire import snippet
from .p_s_methods import Reply
from .transport import ItemFailed

log = logging.getLogger(__name__)

def import_anthropic():
    try:
        import anthropic
    except ImportError:
        raise SilverlabelError("the anthropic teacher needs the anthropic SDK: pip install "
                               "'silverlabel[anthropic]'") from None
    return anthropic


class AnthropicMessages(ChatAPI):
    can_n = False
    expresses = frozenset()

    def __init__(self, model: str, key: str, base_url: str | None, timeout: float):
        self.sdk = import_anthropic()
        self.model = model
        self.client = self.sdk.Anthropic(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)
        self.temperature_allowed = True

    def request(self, messages, *, max_tokens, temperature, n=1, seed=None, top_logprobs=None, choices=None,
                schema=None) -> dict:
        if n != 1 or top_logprobs or choices is not None or schema is not None:
            raise ItemFailed("the Messages API has no n, logprobs or constrained answers")
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        body = {"model": self.model, "max_tokens": max_tokens,
                "messages": [m for m in messages if m["role"] != "system"]}
        if system:
            body["system"] = system
        if temperature != 1.0 and self.temperature_allowed:  # 1.0 is the API's default
            body["temperature"] = temperature
        return body

    def post(self, body: dict) -> Reply:
        fields = {k: v for k, v in body.items() if k != "temperature"}
        if "temperature" in body:
            # the SDK (2.x) dropped the argument, as Anthropic's newer models refuse it; older models and
            # compatible servers (vLLM) still take it in the body
            fields["extra_body"] = {"temperature": body["temperature"]}
        try:
            raw = sdk_call(lambda: self.client.messages.create(**fields), self.sdk).model_dump()
        except ItemFailed as exc:
            if exc.status != 400 or "temperature" not in str(exc) or "extra_body" not in fields:
                raise
            log.warning("%s refuses temperature; its answers are sampled at the API's default", self.model)
            self.temperature_allowed = False
            fields.pop("extra_body")
            raw = sdk_call(lambda: self.client.messages.create(**fields), self.sdk).model_dump()
        return self.read(raw)

    def read(self, raw: dict) -> Reply:
        u = raw.get("usage") or {}
        cached = int(u.get("cache_read_input_tokens") or 0)
        # input_tokens excludes what the cache served or wrote; both are input the provider counts
        usage = Usage(prompt_tokens=int(u.get("input_tokens") or 0) + cached
                      + int(u.get("cache_creation_input_tokens") or 0),
                      cached_tokens=cached, completion_tokens=int(u.get("output_tokens") or 0), requests=1)
        blocks = [b for b in raw.get("content") or [] if b.get("type") == "text"]
        if not blocks:
            raise ItemFailed(f"the reply holds no text ({snippet(str(raw.get('content')))})", usage=usage)
        return Reply(texts=["".join(b.get("text") or "" for b in blocks)], steps=None, usage=usage)

    # ------------------------------------------------------------------ Message Batches
    batch_limits = (100_000, 256 * 1000 * 1000)  # requests and bytes per batch

    def batch_line_bytes(self, custom_id: str, body: dict) -> int:
        return len(json.dumps({"custom_id": custom_id, "params": body}).encode()) + 2

    def submit_batch(self, requests, tag):
        batch = sdk_call(lambda: self.client.messages.batches.create(
            requests=[{"custom_id": c, "params": b} for c, b in requests]), self.sdk)
        return batch.id

    def batch_state(self, batch_id):
        b = sdk_call(lambda: self.client.messages.batches.retrieve(batch_id), self.sdk)
        c = b.request_counts
        return BatchState(status=b.processing_status, ended=b.processing_status == "ended",
                          done=c.succeeded, failed=c.errored + c.canceled + c.expired, total=_total(c))

    def batch_results(self, batch_id):
        for row in sdk_call(lambda: list(self.client.messages.batches.results(batch_id)), self.sdk):
            row = row.model_dump()
            result = row.get("result") or {}
            kind = result.get("type")
            if kind == "succeeded":
                yield row["custom_id"], result.get("message") or {}, None, 200
            elif kind == "errored":
                error = (result.get("error") or {}).get("error") or result.get("error") or {}
                yield row["custom_id"], None, f"{error.get('type', 'error')}: {snippet(str(error.get('message')))}", \
                    None
            else:  # canceled or expired: not answered, asked again
                yield row["custom_id"], None, None, None

    def find_batch(self, tag, *, since, requests, known):
        """The Messages API keeps no metadata on a batch: the one created since the intent was recorded with
        exactly this many requests, and not recorded under another intent, is taken as ours."""
        for b in self.client.messages.batches.list(limit=100):
            created = b.created_at.timestamp()
            if created >= since - 5 and _total(b.request_counts) == requests and b.id not in known:
                return b.id
            if created < since - 60:
                break
        return None

    def close(self) -> None:
        self.client.close()


def _total(c) -> int:
    """A Message Batch's requests, from its counts by state."""
    return c.processing + c.succeeded + c.errored + c.canceled + c.expired


class AnthropicOptions(HostedOptions):
    """``[teachers.options]`` of an ``anthropic:`` teacher."""

    base_url: str | None = Field(None, pattern=r"^https?://")  # a Messages-compatible server; default Anthropic's


@register_teacher(options=AnthropicOptions)
class AnthropicTeacher(HostedTeacher):
    """``anthropic:MODEL`` — e.g. ``anthropic:claude-haiku-4-5``."""

    backend = "anthropic"
    default_key_env = "ANTHROPIC_API_KEY"

    def __init__(self, model: str, *, base_url: str | None = None, **options):
        super().__init__(model, **options)
        self._base_url = base_url.rstrip("/") if base_url else None

    @property
    def base_url(self) -> str | None:
        return self._base_url

    def make_api(self, key: str) -> AnthropicMessages:
        return AnthropicMessages(self.model, key, self._base_url, self.timeout)
