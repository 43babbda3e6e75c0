"""A test-side batch server on 127.0.0.1: OpenAI's Batch API (``/v1/files``, ``/v1/batches``) and Anthropic's
Message Batches (``/v1/messages/batches``), each line answered by the real vLLM server behind
``tests/openai_rules_proxy.py`` (which holds the line to the hosted API's request rules and logs it).

vLLM has no batch routes (only the offline ``vllm run_batch``), so this file is what stands between the teacher's
batch code and a real model: the request and reply formats are the providers' (checked by their own SDKs, which
parse every reply here), the answers are vLLM's. Every other route goes to the proxy unchanged, so the teacher's
synchronous probes reach the same model.

A batch's lines are answered ``concurrency`` at a time (8 by default: vLLM decodes them together, as a provider's
batch fleet would; 8 JSON-schema answers through the proxy took 12.6 s one at a time, 5.5 s four at a time and
4.2 s eight at a time on one core, 5 December 2026; a test may set it to 1 to put each line alone in vLLM's batch).
Faults, set by a test: ``expire_after`` (the next batch expires after that many lines, the rest unanswered),
``fail_every`` (every k-th line fails with HTTP 500), ``extra_polls`` (a batch still shows in progress for that many
polls after its last line), ``line_delay`` (seconds per line). ``executed``
counts how often each custom_id was answered: the test's check that nothing was paid twice.
"""

from __future__ import annotations

import collections
import datetime as dt
import email.parser
import json
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from tests.openai_rules_proxy import Proxy, serve_local


def _iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat().replace("+00:00", "Z")


class BatchServer:
    def __init__(self, proxy: Proxy):
        self.proxy = proxy
        self.url = ""
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}  # id -> state (kind, lines, results, status, polls, ...)
        self.executed: collections.Counter[str] = collections.Counter()
        self.submitted: list[str] = []  # batch ids, in order
        self.expire_after: int | None = None
        self.fail_every: int | None = None
        self.extra_polls = 0
        self.line_delay = 0.0
        self.concurrency = 8
        self.lock = threading.Lock()
        self.work: queue.Queue[str | None] = queue.Queue()
        self.worker = threading.Thread(target=self._run, daemon=True)
        self.worker.start()

    # ------------------------------------------------------------------ answering lines
    def _run(self) -> None:
        while (batch_id := self.work.get()) is not None:
            b = self.batches[batch_id]
            expire_after, b["expire_after"] = b["expire_after"], None
            lines = list(enumerate(b["lines"]))[:expire_after]
            with ThreadPoolExecutor(max(1, b["concurrency"])) as pool:
                list(pool.map(lambda item: self._answer(b, *item), lines))
            b["expired"] = len(b["results"]) < len(b["lines"])
            b["finished_at"] = time.time()

    def _answer(self, b: dict, i: int, line: dict) -> None:
        time.sleep(self.line_delay)
        cid = line["custom_id"]
        injected = bool(b["fail_every"]) and (i + 1) % b["fail_every"] == 0
        if injected:
            result = (500, {"error": {"message": "The server had an error processing the line",
                                      "type": "server_error"}})
        else:
            path = "/v1/chat/completions" if b["kind"] == "openai" else "/v1/messages"
            status, _, content = self.proxy.handle("POST", path, {}, json.dumps(line["body"]).encode())
            result = (status, json.loads(content))
        with self.lock:
            b["results"][cid] = result
            if not injected:
                self.executed[cid] += 1

    def _state(self, batch_id: str, *, poll: bool) -> dict:
        b = self.batches[batch_id]
        if poll:
            b["polls"].append(time.monotonic())
        with self.lock:
            results = list(b["results"].values())
        answered = sum(1 for s, _ in results if s == 200)
        failed = len(results) - answered
        ended = b.get("finished_at") is not None
        if ended and poll:
            b["polls_after"] += 1
        ended = ended and b["polls_after"] > b["extra_polls"]
        if b["kind"] == "openai":
            status = ("expired" if b["expired"] else "completed") if ended else "in_progress"
            out = {"id": batch_id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
                   "input_file_id": b["input_file_id"], "completion_window": "24h", "status": status,
                   "output_file_id": None, "error_file_id": None, "created_at": int(b["created"]),
                   "request_counts": {"total": len(b["lines"]), "completed": answered, "failed": failed},
                   "metadata": b["metadata"]}
            if ended:
                out["output_file_id"], out["error_file_id"] = self._result_files(batch_id)
            return out
        unanswered = len(b["lines"]) - len(results)
        return {"id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "request_counts": {"processing": 0 if ended else unanswered, "succeeded": answered, "errored": failed,
                                   "canceled": 0, "expired": unanswered if ended else 0},
                "ended_at": _iso(b.get("finished_at")) if ended else None, "created_at": _iso(b["created"]),
                "expires_at": _iso(b["created"] + 86400), "archived_at": None, "cancel_initiated_at": None,
                "results_url": f"{self.url}/v1/messages/batches/{batch_id}/results" if ended else None}

    def _result_files(self, batch_id: str) -> tuple[str, str | None]:
        b = self.batches[batch_id]
        if "files" not in b:
            out, err = [], []
            for line in b["lines"]:
                cid = line["custom_id"]
                if cid not in b["results"]:
                    err.append({"id": f"batch_req_{uuid.uuid4().hex[:8]}", "custom_id": cid, "response": None,
                                "error": {"code": "batch_expired", "message": "This request could not be executed "
                                          "before the completion window expired."}})
                    continue
                status, body = b["results"][cid]
                row = {"id": f"batch_req_{uuid.uuid4().hex[:8]}", "custom_id": cid,
                       "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": body},
                       "error": None}
                (out if status == 200 else err).append(row)
            ids = []
            for rows in (out, err):
                if rows:
                    fid = f"file-{uuid.uuid4().hex[:12]}"
                    self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                    ids.append(fid)
                else:
                    ids.append(None)
            b["files"] = tuple(ids)
        return b["files"]

    def _anthropic_results(self, batch_id: str) -> bytes:
        b = self.batches[batch_id]
        rows = []
        for line in b["lines"]:
            cid = line["custom_id"]
            if cid not in b["results"]:
                rows.append({"custom_id": cid, "result": {"type": "expired"}})
                continue
            status, body = b["results"][cid]
            if status == 200:
                rows.append({"custom_id": cid, "result": {"type": "succeeded", "message": body}})
            else:
                rows.append({"custom_id": cid, "result": {"type": "errored", "error": {
                    "type": "error", "error": {"type": "api_error", "message": str(body)}}}})
        return "".join(json.dumps(r) + "\n" for r in rows).encode()

    def _new(self, kind: str, lines: list[dict], **extra) -> str:
        batch_id = ("batch_" if kind == "openai" else "msgbatch_") + uuid.uuid4().hex[:16]
        with self.lock:
            self.batches[batch_id] = {"kind": kind, "lines": lines, "results": {}, "created": time.time(),
                                      "polls": [], "polls_after": 0, "extra_polls": self.extra_polls, "expired": False,
                                      "expire_after": self.expire_after, "fail_every": self.fail_every,
                                      "concurrency": self.concurrency, **extra}
            self.expire_after = None  # a fault applies to the next batch only
            self.submitted.append(batch_id)
        self.work.put(batch_id)
        return batch_id

    # ------------------------------------------------------------------ routes
    def handle(self, method: str, path: str, headers: dict, raw: bytes) -> tuple[int, bytes, str]:
        route = path.split("?")[0].rstrip("/")
        parts = route.split("/")
        js = "application/json"
        if route == "/v1/files" and method == "POST":
            msg = email.parser.BytesParser().parsebytes(
                f"Content-Type: {headers['content-type']}\r\n\r\n".encode() + raw)
            data = next(p.get_payload(decode=True) for p in msg.get_payload()
                        if p.get_param("name", header="content-disposition") == "file")
            fid = f"file-{uuid.uuid4().hex[:12]}"
            self.files[fid] = data
            return 200, json.dumps({"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                    "filename": "batch.jsonl", "purpose": "batch", "status": "processed"}).encode(), js
        if route.startswith("/v1/files/") and route.endswith("/content"):
            fid = parts[3]
            if fid not in self.files:
                return 404, b'{"error": {"message": "No such File object"}}', js
            return 200, self.files[fid], "application/octet-stream"
        if route == "/v1/batches" and method == "POST":
            body = json.loads(raw)
            lines = [json.loads(x) for x in self.files[body["input_file_id"]].decode().splitlines() if x.strip()]
            batch_id = self._new("openai", lines, input_file_id=body["input_file_id"],
                                 metadata=body.get("metadata") or {})
            return 200, json.dumps(self._state(batch_id, poll=False)).encode(), js
        if route == "/v1/batches" and method == "GET":
            data = [self._state(i, poll=False) for i in reversed(self.submitted) if self.batches[i]["kind"] == "openai"]
            return 200, json.dumps({"object": "list", "data": data, "has_more": False}).encode(), js
        if route == "/v1/messages/batches" and method == "POST":
            body = json.loads(raw)
            lines = [{"custom_id": r["custom_id"], "body": r["params"]} for r in body["requests"]]
            batch_id = self._new("anthropic", lines)
            return 200, json.dumps(self._state(batch_id, poll=False)).encode(), js
        if route == "/v1/messages/batches" and method == "GET":
            data = [self._state(i, poll=False) for i in reversed(self.submitted)
                    if self.batches[i]["kind"] == "anthropic"]
            return 200, json.dumps({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                                    "last_id": data[-1]["id"] if data else None}).encode(), js
        if route.startswith(("/v1/batches/", "/v1/messages/batches/")):
            batch_id = parts[3] if route.startswith("/v1/batches/") else parts[4]
            if batch_id not in self.batches:
                return 404, json.dumps({"error": {"type": "not_found_error", "message": f"No batch {batch_id}"}}
                                       ).encode(), js
            if route.endswith("/results"):
                return 200, self._anthropic_results(batch_id), "application/binary"
            return 200, json.dumps(self._state(batch_id, poll=True)).encode(), js
        status, _, content = self.proxy.handle(method, path, headers, raw)  # the synchronous routes
        return status, content, js

    def close(self) -> None:
        self.work.put(None)


@contextmanager
def batch_server(upstream: str, rules: str = "openai"):
    """The batch server on a free 127.0.0.1 port in front of ``upstream`` (vLLM); yields (its URL without /v1,
    the BatchServer; ``server.proxy.log`` holds every request vLLM answered)."""
    server = BatchServer(Proxy(upstream, rules))

    def handle(method, path, headers, raw):
        status, body, kind = server.handle(method, path, headers, raw)
        return status, {"Content-Type": kind}, body

    try:
        with serve_local(handle) as url:
            server.url = url
            yield url, server
    finally:
        server.close()
        server.proxy.client.close()
