"""A fault-injecting OpenAI-compatible server on 127.0.0.1 for the hardening tests (tests/integration/
test_server_faults.py, tests/unit/test_security.py).

It imitates what the openai teacher needs from vLLM (``/tokenize``, ``/detokenize``, ``/v1/completions`` with
``echo`` and ``logprobs``, guided choice through ``structured_outputs``) over a toy model with deterministic
log-probabilities, so a test knows every right answer without loading a model; the real llama_cpp.server is
covered by test_openai_teacher.py. Tokens are characters (id = code point); the model's next-token distribution
after a context is a softmax over printable ASCII of a hash of the context and the token.

Faults are planned per item: an item's text carries a marker such as ``<<i07>>``, and each ``/v1/completions``
request whose prompt ends with that item (the last marker in the prompt) takes the next fault of
``plan["i07"]``, then ``forever["i07"]`` once the plan is used up. Every request is logged as
``(time, marker, what it met)`` so a test can count retries and measure the backoff between them.

Faults: ``500``/``503`` (an error page quoting the request's Authorization header), ``429`` (with
``Retry-After: retry_after``), ``400`` (quoting the header too), ``hang`` (no reply for ``hang_s``), ``drop``
(the connection closed without a reply), ``truncated`` (a 200 whose body stops before its Content-Length),
``garbage`` (a 200 whose body is malformed JSON), ``nologprobs`` (logprobs null), ``nan`` (a log-probability above
zero), ``nochoices`` (an empty choices list), ``offlabel`` (guided choice answers a string outside the label set;
it waits for the item's guided request).
"""

from __future__ import annotations

import collections
import functools
import json
import math
import re
import socket
import threading
import time
import zlib
from collections.abc import Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType

VOCAB = [chr(c) for c in range(32, 127)]
MARKER = re.compile(r"<<(\w+)>>")
GUIDED_FIELDS = ("structured_outputs", "guided_choice")


@functools.lru_cache(maxsize=4096)  # ~7 kB each
def logprobs_after(context: str) -> Mapping[str, float]:
    """The toy model: log-probabilities of every next character after ``context`` (a hash of all of it). Cached,
    read-only: an echoed prompt asks for every prefix of itself, and a retried or re-scored item for the same ones
    again (this was ~30 core-seconds of the default tier in the server's threads)."""
    seed = zlib.crc32(context.encode("utf-8", "replace"))
    logits = {t: (zlib.crc32(t.encode(), seed) % 1000) / 150.0 for t in VOCAB}
    top = max(logits.values())
    norm = top + math.log(sum(math.exp(v - top) for v in logits.values()))
    return MappingProxyType({t: v - norm for t, v in logits.items()})


def token_logprob(context: str, token: str) -> float:
    """A character outside printable ASCII gets a fixed low log-probability (it is never generated)."""
    return logprobs_after(context).get(token, -30.0)


def top(dist: Mapping[str, float], k: int) -> dict[str, float]:
    return dict(sorted(dist.items(), key=lambda kv: (-kv[1], kv[0]))[:k])


def sequence_logprob(context: str, answer: str) -> float:
    return sum(token_logprob(context + answer[:i], answer[i]) for i in range(len(answer)))


class FaultServer(ThreadingHTTPServer):
    """The server; ``plan``, ``forever``, ``api_key``, ``guided``, ``retry_after`` and ``hang_s`` are set by the
    test, ``log`` read by it."""

    daemon_threads = True

    def __init__(self, *, api_key: str | None = None, guided: bool = True):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api_key = api_key
        self.guided = guided
        self.plan: dict[str, collections.deque] = {}
        self.forever: dict[str, str] = {}
        self.retry_after = "0.3"
        self.hang_s = 1.0
        self.log: list[tuple[float, str | None, str]] = []
        self.headers_seen: list[str] = []  # every Authorization header, to check the key arrived
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):  # a client that gave up closed the socket: expected
        pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def schedule(self, marker: str, *faults: str, forever: str | None = None) -> None:
        with self.lock:
            self.plan[marker] = collections.deque(faults)
            if forever:
                self.forever[marker] = forever

    def clear(self) -> None:
        with self.lock:
            self.plan.clear()
            self.forever.clear()
            self.log.clear()

    def take(self, marker: str | None, guided: bool) -> str | None:
        with self.lock:
            queue = self.plan.get(marker)
            fault = queue[0] if queue else self.forever.get(marker)
            if fault == "offlabel" and not guided:
                fault = None  # waits for the item's guided request
            elif queue and fault is not None:
                queue.popleft()
            self.log.append((time.monotonic(), marker, fault or "ok"))
            return fault

    def requests_for(self, marker: str) -> list[tuple[float, str]]:
        with self.lock:
            return [(t, what) for t, m, what in self.log if m == marker]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers: a dropped connection is then a surprise

    def log_message(self, *args):
        pass

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, payload, *, headers: dict | None = None, ctype="application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        auth = self.headers.get("Authorization", "")
        with self.server.lock:
            self.server.headers_seen.append(auth)
        if self.server.api_key is not None and auth != f"Bearer {self.server.api_key}":
            self._send(401, {"error": {"message": "invalid api key", "code": 401}})
            return False
        return True

    def do_GET(self):
        if not self._authorised():
            return
        if self.path.rstrip("/").endswith("/v1/models"):
            self._send(200, {"object": "list", "data": [{"id": "toy", "object": "model"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if not self._authorised():
            return
        path = self.path.rstrip("/")
        if path.endswith("/v1/completions"):
            self._completions(body)
        elif path.endswith("/tokenize") and not path.endswith("/extras/tokenize"):
            if "messages" in body:  # no chat template here: the teacher must be used with the raw prompt
                self._send(400, {"error": "messages are not supported"})
                return
            text = body.get("prompt", body.get("content", ""))
            self._send(200, {"tokens": [ord(c) for c in text], "count": len(text)})
        elif path.endswith("/detokenize") and not path.endswith("/extras/detokenize"):
            self._send(200, {"prompt": "".join(chr(t) for t in body.get("tokens", []))})
        else:
            self._send(404, {"error": "not found"})

    # ------------------------------------------------------------------ completions
    def _completions(self, body: dict) -> None:
        srv: FaultServer = self.server
        prompt = body.get("prompt", "")
        markers = MARKER.findall(prompt)
        guided = next((f for f in GUIDED_FIELDS if f in body), None)
        fault = srv.take(markers[-1] if markers else None, guided is not None)
        auth = self.headers.get("Authorization", "")
        if fault in ("500", "503"):
            self._send(int(fault), f"internal error while serving {auth}".encode(), ctype="text/plain")
        elif fault == "429":
            self._send(429, {"error": "rate limited"}, headers={"Retry-After": srv.retry_after})
        elif fault == "400":
            self._send(400, {"error": f"bad request from {auth}"})
        elif fault == "hang":
            time.sleep(srv.hang_s)
            self.close_connection = True
        elif fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif fault == "truncated":
            payload = json.dumps(self._reply(body, prompt, guided)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 3])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif fault == "garbage":
            self._send(200, b'{"choices": [{"text": " pos", "logprobs": {"tokens": [')
        elif fault == "nologprobs":
            self._send(200, {"choices": [{"text": " pos", "logprobs": None, "index": 0}],
                             "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1}})
        elif fault == "nan":
            reply = self._reply(body, prompt, guided)
            lp = reply["choices"][0].get("logprobs")
            if lp and lp["token_logprobs"]:
                lp["token_logprobs"] = [3.5 if v is not None else None for v in lp["token_logprobs"]]
            self._send(200, reply)
        elif fault == "nochoices":
            self._send(200, {"choices": [], "usage": {"prompt_tokens": len(prompt), "completion_tokens": 0}})
        elif fault == "offlabel":
            self._send(200, {"choices": [{"text": "banana", "index": 0, "logprobs": None}],
                             "usage": {"prompt_tokens": len(prompt), "completion_tokens": 2}})
        else:
            self._send(200, self._reply(body, prompt, guided))

    def _reply(self, body: dict, prompt: str, guided: str | None) -> dict:
        if guided is not None and self.server.guided:
            spec = body[guided]
            choices = spec.get("choice", []) if isinstance(spec, dict) else spec
            best = max(choices, key=lambda c: (sequence_logprob(prompt, c), c)) if choices else ""
            return {"choices": [{"text": best, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(best)}}
        k = int(body.get("logprobs") or 0)
        bias = {chr(int(t)): v for t, v in (body.get("logit_bias") or {}).items()}
        generated, context = [], prompt
        for _ in range(max(1, int(body.get("max_tokens", 1)))):
            dist = logprobs_after(context)
            forced = [t for t, v in bias.items() if v >= 50 and t in dist]
            token = forced[0] if forced else max(dist, key=lambda t: (dist[t], t))
            generated.append((token, dist[token], top(dist, k)))  # the model's own value, before any bias
            context += token
        text = "".join(t for t, _, _ in generated)
        logprobs = None
        if k:
            tokens = [t for t, _, _ in generated]
            values: list[float | None] = [v for _, v, _ in generated]
            tops = [tp for _, _, tp in generated]
            if body.get("echo"):
                echoed = [prompt[i] for i in range(len(prompt))]
                ev = [None] + [token_logprob(prompt[:i], prompt[i]) for i in range(1, len(prompt))]
                et = [None] + [{**top(logprobs_after(prompt[:i]), k), prompt[i]: ev[i]} for i in range(1, len(prompt))]
                tokens, values, tops = echoed + tokens, ev + values, et + tops
                text = prompt + text
            logprobs = {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops,
                        "text_offset": list(range(len(tokens)))}
        return {"id": "cmpl-toy", "object": "text_completion", "model": body.get("model", "toy"),
                "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": "length"}],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(generated),
                          "total_tokens": len(prompt) + len(generated)}}


@contextmanager
def fault_server(**options):
    """The server on a free 127.0.0.1 port, in a thread of this process; yields it."""
    srv = FaultServer(**options)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
