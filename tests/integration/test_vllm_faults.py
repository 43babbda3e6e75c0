"""Bad input and faults on a real vLLM server (the session's ``vllm`` fixture), some through a small proxy in
front of it: a text longer than the server's context is cut to fit and counted, a study stops with a clear
error when too many items fail (and the rerun retries only them), and new weights behind the same served name
at the same URL are not read from the cache."""

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from silverlabel.cache import AnnotationStore
from silverlabel.config import StudyConfig
from silverlabel.errors import SilverlabelError
from silverlabel.teachers import get_teacher
from tests.vllm_server import MAX_MODEL_LEN

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.slow, pytest.mark.ci]


class Proxy(ThreadingHTTPServer):
    """Relays to the real server; ``root`` replaces what /v1/models reports as the model's root, and a
    /v1/completions request whose prompt holds one of ``fail_texts`` gets a 500."""

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.root: str | None = None
        self.fail_texts: list[str] = []
        self.failed = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        status, payload = self._relay(None)
        if self.path.rstrip("/").endswith("/v1/models") and self.server.root is not None:
            data = json.loads(payload)
            for entry in data["data"]:
                entry["root"] = self.server.root
            payload = json.dumps(data).encode()
        self._send(status, payload)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        prompts = json.loads(body).get("prompt") if self.path.endswith("/completions") else None
        prompts = [prompts] if isinstance(prompts, str) else prompts or []
        if any(t in p for t in self.server.fail_texts for p in prompts):
            self.server.failed += 1
            self._send(500, b'{"error": "injected"}')
            return
        self._send(*self._relay(body))

    def _relay(self, body):
        keep = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
        request = urllib.request.Request(self.server.upstream + self.path, data=body, method=self.command,
                                         headers=keep)
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _send(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def proxy(vllm):
    p = Proxy(vllm)
    thread = threading.Thread(target=p.serve_forever, daemon=True)
    thread.start()
    yield p
    p.shutdown()
    p.server_close()


def test_a_text_longer_than_the_context_is_cut_to_fit_and_counted(vllm, toxic):
    s, prompt = toxic
    long_text = " ".join(s.train.texts[:400])  # far more than 2048 tokens
    teacher = get_teacher(f"openai:{vllm}/v1#smol", concurrency=2)
    teacher.prepare(prompt)
    try:
        # the server's own answer to the uncut prompt: refused, it does not fit
        reply = httpx.post(f"{vllm}/v1/completions", json={"model": "smol", "prompt": teacher._context(long_text),
                                                            "max_tokens": 1}, timeout=120)
        assert reply.status_code == 400 and "2048" in reply.text
        ann = teacher.annotate(["long", "short"], [long_text, s.train.texts[0]], prompt)
    finally:
        teacher.close()
    assert ann.summary.failed == 0 and ann.summary.truncated == 1
    tokens = ann.frame["prompt_tokens"].tolist()
    assert MAX_MODEL_LEN - 40 < tokens[0] <= MAX_MODEL_LEN and tokens[1] < 400
    assert ann.frame["label"].notna().all()


def test_a_study_stops_when_too_many_items_fail_and_the_rerun_retries_only_them(proxy, toxic, tmp_path):
    from silverlabel import study

    config = StudyConfig.from_dict({
        "datasets": [{"source": "toxic", "n_train": 16, "n_test": 8}],
        "teachers": [{"name": "vllm", "uri": f"openai:{proxy.url}/v1#smol", "max_failed_share": 0.1,
                      "options": {"max_retries": 0, "concurrency": 4}}]})
    spec = config.teachers[0]
    prep = study.prepare_dataset(config.datasets[0], sizes=config.sizes, offline=True)
    texts = prep.splits.train.texts + prep.splits.validation.texts
    fail = texts[:6]  # a quarter of the items fail, whatever the retries
    bad = sum(t in fail for t in texts)
    store = AnnotationStore(tmp_path / "a.sqlite")
    try:
        proxy.fail_texts = fail
        with pytest.raises(SilverlabelError, match=rf"teacher 'vllm' failed on {bad} of {len(texts)} items .*"
                                                   r"max_failed_share 0.1.*rerun, which retries only those items"):
            study.annotate(prep, spec, 0, store)
        assert proxy.failed >= bad
        proxy.fail_texts = []
        frame = study.annotate(prep, spec, 0, store)
    finally:
        store.close()
    summary = frame.attrs["summary"]
    assert summary["cached"] == len(texts) - bad and summary["labelled"] == bad and summary["failed"] == 0


def test_new_weights_behind_the_same_name_are_not_read_from_the_cache(proxy, toxic, tmp_path):
    s, prompt = toxic
    texts, items = s.train.texts[:4], s.train.items[:4]
    store = AnnotationStore(tmp_path / "a.sqlite")

    def run(root):
        proxy.root = root
        teacher = get_teacher(f"openai:{proxy.url}/v1#smol", concurrency=4)
        try:
            return teacher.model_id, teacher.annotate(items, texts, prompt, store=store).summary
        finally:
            teacher.close()

    try:
        first_id, first = run(None)
        again_id, again = run(None)
        other_id, other = run("/models/retrained-smollm2")
    finally:
        store.close()
    assert first.labelled == 4 and again.cached == 4 and again_id == first_id
    assert other_id != first_id and other.cached == 0 and other.labelled == 4
