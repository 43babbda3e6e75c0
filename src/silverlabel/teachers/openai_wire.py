"""The OpenAI-compatible wire format as servers actually speak it: the ``openai:BASE_URL#MODEL`` URI, the
request fields that constrain a generation to a list of choices, and reading replies (choices, log-probabilities
in either layout, usage, token ids). Whatever a reply lacks is an :class:`ItemFailed`, which the teacher turns
into that item's error. Hand-written: the ``openai`` SDK validates OpenAI's own schema and drops the fields these
servers add (``logprob_token_ids``, ``structured_outputs``, ``grammar``, tokenize endpoints)."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from ..errors import SilverlabelError
from .transport import ItemFailed  # noqa: F401  (the readers below raise it; re-exported for the teachers)

TOKEN_KEY = re.compile(r"token_id:(\d+)$")  # how vLLM writes a token with return_tokens_as_token_ids
EXAMPLE_URI = "openai:http://127.0.0.1:8000/v1#my-model"
# the request fields that constrain a generation to a list of choices, tried in this order: vLLM's (0.12 on, and
# before), then a GBNF grammar, which llama.cpp's servers (llama-cpp-python's and llama-server) take
GUIDED_FIELDS = ("structured_outputs", "guided_choice", "grammar")


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def guided_value(field: str, choices: Sequence[str]):
    """The value of a guided-choice request field for these choices."""
    if field == "structured_outputs":
        return {"choice": list(choices)}
    if field == "grammar":
        return "root ::= " + " | ".join(gbnf_literal(c) for c in choices)
    return list(choices)


def most_tokens(choices: Sequence[str]) -> int:
    """max_tokens for a constrained answer: one token per byte at worst; the server stops at the choice's end."""
    return max(len(c.encode("utf-8")) for c in choices) + 4


def import_httpx():
    try:
        import httpx
    except ImportError:
        raise SilverlabelError("the openai teacher needs httpx: pip install 'silverlabel[openai]'") from None
    return httpx


def parse_model(model: str, backend: str = "openai") -> tuple[str, str]:
    """Split ``BASE_URL#MODEL`` at the last '#' (a URL may itself hold one)."""
    example = EXAMPLE_URI.replace("openai:", f"{backend}:", 1)
    base, sep, name = model.rpartition("#")
    if not sep or not base.strip() or not name.strip():
        raise SilverlabelError(f"teacher '{backend}:{model}' names no model; write {backend}:BASE_URL#MODEL, e.g. "
                               f"{example} (MODEL as the server lists it under /v1/models)")
    parts = urlsplit(base.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SilverlabelError(f"teacher '{backend}:{model}': '{base}' is not an http(s) URL; e.g. {example}")
    return base.strip().rstrip("/"), name.strip()


def snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def retry_after(value: str | None) -> float | None:
    """Seconds a 429 asks us to wait: Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def token_ids_of(reply: dict) -> list[int]:
    """Token ids from a tokenize reply: vLLM and llama-cpp-python give ints, llama-server ints or {id, piece}."""
    tokens = reply.get("tokens")
    if not isinstance(tokens, list):
        raise ItemFailed(f"the tokenize reply has no token list ({snippet(json.dumps(reply))})")
    ids = [t.get("id") if isinstance(t, dict) else t for t in tokens]
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise ItemFailed("the tokenize reply holds something other than token ids")
    return ids


def first_choice(reply: dict) -> dict:
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ItemFailed(f"the reply has no choices ({snippet(json.dumps(reply))})")
    return choices[0]


def logprobs_of(choice: dict) -> dict:
    """The choice's log-probabilities in the legacy completions form (``tokens``, ``token_logprobs``,
    ``top_logprobs`` as token -> log-probability). llama.cpp's llama-server writes them the chat way,
    ``content: [{id, token, logprob, top_logprobs: [{id, token, logprob}]}]``, also on /v1/completions; that is
    turned into the legacy form here, so every reader of log-probabilities sees one shape."""
    lp = choice.get("logprobs")
    if isinstance(lp, dict) and isinstance(lp.get("content"), list) and "token_logprobs" not in lp:
        entries = [e for e in lp["content"] if isinstance(e, dict)]
        if len(entries) != len(lp["content"]):
            raise ItemFailed("the reply's logprobs.content holds something other than token entries")
        lp = {"tokens": [e.get("token") for e in entries], "token_logprobs": [e.get("logprob") for e in entries],
              "top_logprobs": [{t.get("token"): t.get("logprob") for t in e.get("top_logprobs") or []
                                if isinstance(t, dict)} for e in entries]}
    if not isinstance(lp, dict) or not isinstance(lp.get("token_logprobs"), list) \
            or not isinstance(lp.get("tokens"), list) or len(lp["tokens"]) != len(lp["token_logprobs"]):
        raise ItemFailed("the reply carries no token log-probabilities (does the server support logprobs on "
                          "/v1/completions?)")
    return lp


def finite_logprob(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value > 1e-3:
        raise ItemFailed(f"{what} is not a log-probability: {value!r}")
    return float(min(value, 0.0))


def usage_of(reply: dict, field: str) -> int:
    usage = reply.get("usage")
    value = usage.get(field) if isinstance(usage, dict) else None
    if not isinstance(value, int):
        raise ItemFailed(f"the reply has no usage.{field}")
    return value
