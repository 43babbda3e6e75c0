"""A test-side proxy on 127.0.0.1 in front of the real vLLM server that holds requests to the rules of the hosted
APIs, so the ``chat:`` and ``anthropic:`` teachers meet vLLM's real model the way they will meet OpenAI and
Anthropic.

``/v1/chat/completions`` under ``rules="openai"`` refuses (HTTP 400, OpenAI's wording) any field OpenAI's Chat
Completions API does not define (vLLM's ``echo``, ``logprob_token_ids``, ``allowed_token_ids``,
``prompt_logprobs``, ``structured_outputs``, ``guided_choice``, ...) and ``top_logprobs`` above 20; under
``rules="reasoning"`` it also refuses ``logprobs`` and ``top_logprobs``, as OpenAI's reasoning models do.
``/v1/messages`` passes to vLLM's Messages endpoint after refusing what Anthropic's API lacks (``n``, ``seed``,
``logprobs``). Under either rule set any other route is a 404 (the hosted APIs have no ``/tokenize``); under
``rules="none"`` everything passes through unchanged (a counting proxy).

Every request is logged with its arrival time, body, status and reply, so a test counts requests per item and
reads the usage the server reported itself. Faults: ``fail_first`` requests answered 429 with ``Retry-After:
retry_after``; ``quote_key`` makes a 400 quote the request's Authorization header (as some servers do).
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

# the request fields of OpenAI's Chat Completions API (2026), the only ones the hosted API accepts
OPENAI_CHAT_FIELDS = {
    "model", "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "metadata", "modalities", "n", "parallel_tool_calls", "prediction",
    "presence_penalty", "prompt_cache_key", "reasoning_effort", "response_format", "safety_identifier", "seed",
    "service_tier", "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
    "top_logprobs", "top_p", "user", "verbosity", "web_search_options"}
ANTHROPIC_LACKS = {"n", "seed", "logprobs", "top_logprobs", "logit_bias"}


class Proxy:
    def __init__(self, upstream: str, rules: str = "openai"):
        self.upstream = upstream.rstrip("/")
        self.rules = rules
        self.log: list[dict] = []
        self.fail_first = 0
        self.retry_after = 1.0
        self.quote_key = False
        self.lock = threading.Lock()
        self.client = httpx.Client(timeout=300)

    def refusal(self, path: str, body) -> str | None:
        if self.rules in ("openai", "reasoning") and not path.startswith(("/v1/chat/completions", "/v1/models",
                                                                          "/v1/messages")):
            return "Not found: OpenAI's API has no such route"  # no /tokenize, /v1/completions echo, ...
        if not isinstance(body, dict):
            return None
        if path.endswith("/chat/completions") and self.rules in ("openai", "reasoning"):
            unknown = sorted(set(body) - OPENAI_CHAT_FIELDS)
            if unknown:
                return f"Unrecognized request argument supplied: {unknown[0]}"
            if isinstance(body.get("top_logprobs"), int) and body["top_logprobs"] > 20:
                return "Invalid 'top_logprobs': integer above maximum value. Expected a value <= 20"
            if self.rules == "reasoning" and (body.get("logprobs") or "top_logprobs" in body):
                return "Unsupported parameter: 'logprobs' is not supported with this model."
        if path.endswith("/messages"):
            lacking = sorted(set(body) & ANTHROPIC_LACKS)
            if lacking:
                return f"{lacking[0]}: Extra inputs are not permitted"
        return None

    def handle(self, method: str, path: str, headers: dict, raw: bytes) -> tuple[int, dict, bytes]:
        entry = {"t": time.monotonic(), "path": path, "body": None, "status": None, "reply": None}
        with self.lock:
            self.log.append(entry)
            fault = self.fail_first > 0 and method == "POST"
            if fault:
                self.fail_first -= 1
        if fault:
            entry["status"] = 429
            return 429, {"Retry-After": f"{self.retry_after:g}"}, b'{"error": {"message": "Rate limit reached"}}'
        body = json.loads(raw) if raw else None
        entry["body"] = body
        why = self.refusal(path, body)
        if why is not None:
            if self.quote_key:
                why += f" (request header: {headers.get('authorization')})"
            entry["status"] = 404 if why.startswith("Not found") else 400
            return entry["status"], {}, json.dumps({"error": {"message": why, "type": "invalid_request_error"}}
                                                   ).encode()
        resp = self.client.request(method, self.upstream + path, content=raw,
                                   headers={"content-type": "application/json"})
        entry["status"] = resp.status_code
        try:
            entry["reply"] = resp.json()
        except ValueError:
            entry["reply"] = resp.text
        return resp.status_code, {}, resp.content

    def requests(self, path_end: str, status: int | None = 200) -> list[dict]:
        return [e for e in self.log if e["path"].endswith(path_end) and (status is None or e["status"] == status)]


@contextmanager
def serve_local(handle):
    """An HTTP server on a free 127.0.0.1 port answering GET and POST with ``handle(method, path, headers, body)
    -> (status, headers, body)`` (JSON unless the headers say otherwise); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, headers, body = handle(method, self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
            self.send_response(status)
            headers = {"Content-Type": "application/json", **headers, "Content-Length": str(len(body))}
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            self._serve("POST")

        def do_GET(self):  # noqa: N802
            self._serve("GET")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def openai_rules_proxy(upstream: str, rules: str = "openai"):
    """A proxy on a free 127.0.0.1 port; yields (its base URL without /v1, the Proxy with its log)."""
    proxy = Proxy(upstream, rules)
    try:
        with serve_local(proxy.handle) as url:
            yield url, proxy
    finally:
        proxy.client.close()
