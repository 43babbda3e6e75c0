"""``anthropic:MODEL``: a model behind Anthropic's Messages API, through the official ``anthropic`` SDK (the
``base_url`` option points it at a compatible server, e.g. vLLM's ``/v1/messages``).

The Messages API returns no log-probabilities and has no ``n``, ``seed`` or ``logit_bias``, so P_S comes from
k sampled answers (k requests), the model's stated probabilities, or the answer alone; the answer is held to the
labels by the prompt's instruction, and an answer outside them is the item's failure.
"""

from __future__ import annotations

import logging

from pydantic import Field

from ..errors import SilverlabelError
from .base import Usage, register_teacher
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

    def send(self, messages, *, max_tokens, temperature, n=1, seed=None, top_logprobs=None, choices=None,
             schema=None) -> Reply:
        if n != 1 or top_logprobs or choices is not None or schema is not None:
            raise ItemFailed("the Messages API has no n, logprobs or constrained answers")
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [m for m in messages if m["role"] != "system"]
        fields = {"model": self.model, "max_tokens": max_tokens, "messages": turns}
        if system:
            fields["system"] = system
        if temperature != 1.0 and self.temperature_allowed:
            # the SDK (2.x) dropped the argument, as Anthropic's newer models refuse it; older models and
            # compatible servers (vLLM) still take it in the body, and 1.0 is the API's default anyway
            fields["extra_body"] = {"temperature": temperature}
        try:
            raw = sdk_call(lambda: self.client.messages.create(**fields), self.sdk).model_dump()
        except ItemFailed as exc:
            if exc.status != 400 or "temperature" not in str(exc) or "extra_body" not in fields:
                raise
            log.warning("%s refuses temperature; its answers are sampled at the API's default", self.model)
            self.temperature_allowed = False
            fields.pop("extra_body")
            raw = sdk_call(lambda: self.client.messages.create(**fields), self.sdk).model_dump()
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

    def close(self) -> None:
        self.client.close()


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
