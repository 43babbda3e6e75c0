"""The openai teacher against a real llama-cpp-python server on 127.0.0.1 serving the shipped SmolLM2-135M: its
records, its agreement with the in-process llamacpp teacher on the same model and prompt, an API key that never
leaks, and retries and per-item errors through a fault-injecting proxy in front of the real server."""

import collections
import json
import logging
import math
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from silverlabel.assets import gguf_path
from silverlabel.cache import AnnotationStore
from silverlabel.errors import SilverlabelError
from silverlabel.teachers import Prompt, get_teacher
from silverlabel.teachers.prompts import Demonstrations
from silverlabel.teachers.trie import distribution, guided_choice
from tests.helpers import guided_reference, require
from tests.integration.grammar_reference import label_grammar
from tests.integration.llama_server import CANARY, TEMPLATE

# llama-cpp-python's server (the session's `server` fixture): one unit with the contract test's openai backend
# under xdist, so it starts once, not on both workers (tests/conftest.py)
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.uses_server("server")]
require("llama_cpp", "pip install 'silverlabel[llamacpp]'")  # a failure in CI, not a silent skip
import llama_cpp  # noqa: E402

N_ITEMS = 6


def assert_logprobs_close(a, b):
    """Two readings of the same label tokens' log-probabilities from the same Q4 file through different batch
    shapes of llama.cpp's quantised kernels. Measured over the 18 label readings of
    ``test_agrees_with_the_in_process_llamacpp_teacher``: the likely tokens (log-prob above -1, a label's
    continuation) within 0.0021 nats; the unlikely first tokens (log-prob -4 to -10) by up to 0.41 nats on an
    AMX Xeon (0.36 on an AVX2 EPYC), which as probability is at most 0.0044. Bounds: 0.01 nats for the likely
    tokens (about 5x), 0.5 nats and 0.01 in probability for the rest (a shifted or missing token moves a likely
    token by whole nats, so the tight part is what catches wrong code)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, (a, b)
    likely = b > -1
    assert np.abs(a - b)[likely].max(initial=0) < 0.01, (a, b)
    assert np.abs(a - b).max() < 0.5 and np.abs(np.exp(a) - np.exp(b)).max() < 0.01, (a, b)


def _files_bytes(folder) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


class _AllLogs(logging.Handler):
    """Every log record at every level, formatted with its arguments (caplog is per test; the canary check
    covers the module fixtures' prepare and annotate too)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))

    def __enter__(self):
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(logging.DEBUG)
        root.addHandler(self)
        return self

    def __exit__(self, *exc):
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)


@pytest.fixture(scope="module")
def all_logs():
    return _AllLogs()


def _teacher(url: str, prompt: Prompt, **options):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", CANARY)
        teacher = get_teacher(f"openai:{url}/v1#smol", chat_template=TEMPLATE, **options)
        teacher.prepare(prompt)
    return teacher


@pytest.fixture(scope="module")
def teacher(server, toxic, all_logs):
    with all_logs:
        t = _teacher(server, toxic[1])
    yield t
    t.close()


@pytest.fixture(scope="module")
def annotated(teacher, toxic, tmp_path_factory, all_logs):
    """The records of N_ITEMS items, the raw scores behind them, and the folder of their store."""
    s, prompt = toxic
    folder = tmp_path_factory.mktemp("store")
    scored = []

    def score(texts):
        scored.extend(original(texts))
        return scored[-len(texts):]

    teacher.score, original = score, teacher.score
    try:
        with all_logs, AnnotationStore(folder / "a.sqlite") as store:
            ann = teacher.annotate(s.train.items[:N_ITEMS], s.train.texts[:N_ITEMS], prompt, store=store,
                                   gold=s.train.labels[:N_ITEMS])
    finally:
        del teacher.score
    return ann, scored, folder


def test_guided_p_s_forces_only_the_branching_steps_and_renormalises_them(server, toxic, teacher, annotated):
    """p_s="guided" token by token: one forced request per first token (every Toxic label starts with its own),
    where the sequence P_S takes one per trie edge; its P_S is the sequence run's raw scores renormalised over
    each step's allowed label tokens, computed here."""
    s, prompt = toxic
    _, scored, _ = annotated
    guided = _teacher(server, prompt, p_s="guided")
    try:
        assert guided.mode == teacher.mode == "next_token" and guided.label_tokens == teacher.label_tokens
        assert len(guided.way.edges) == len({ids[0] for ids in teacher.label_tokens}) == 3 < len(teacher.way.edges)
        ann = guided.annotate(s.train.items[:3], s.train.texts[:3], prompt)
    finally:
        guided.close()
    want = [guided_reference(teacher.label_tokens, x.token_logprobs) for x in scored[:3]]
    assert np.allclose(ann.probs(), want, atol=1e-4), (ann.probs(), want)
    assert ann.frame["label"].tolist() == annotated[0].frame["label"][:3].tolist()
    assert (ann.frame["prompt_tokens"] == annotated[0].frame["prompt_tokens"][:3]).all()


# ---------------------------------------------------------------------------------------------- no server
def test_an_unreachable_server_is_a_clear_error():
    require("httpx", "pip install 'silverlabel[openai]'")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = get_teacher(f"openai:http://127.0.0.1:{port}/v1#m", chat=False, max_retries=1)
    prompt = Prompt(task="t", label_names=("a", "b"), demonstrations=Demonstrations(seed=0, examples=()))
    with pytest.raises(SilverlabelError, match="cannot be reached: .*connection failed"):
        t.prepare(prompt)


def test_uri_splits_at_the_last_hash_and_needs_a_model():
    with pytest.raises(SilverlabelError, match="openai:http://127.0.0.1:8000/v1#my-model"):
        get_teacher("openai:http://127.0.0.1:8000/v1")
    with pytest.raises(SilverlabelError, match="not an http"):
        get_teacher("openai:127.0.0.1:8000#m")
    t = get_teacher("openai:http://user:secret@127.0.0.1:8000/v1#org/model#q4")
    assert (t.base_url, t.served_model) == ("http://user:secret@127.0.0.1:8000/v1#org/model", "q4")
    assert t.model_id == "openai:q4@http://127.0.0.1:8000/v1#org/model"  # user:password stays out of cache keys


# ---------------------------------------------------------------------------------------------- the real server
def test_annotation_records_through_the_server(toxic, teacher, annotated):
    s, _ = toxic
    ann, _, _ = annotated
    # llama-cpp-python's echo costs a Python sort of the vocabulary per prompt token, so labels are scored token
    # by token; it stops at <|im_end|> before reporting it, so without the terminator; its guided choice is a GBNF
    # grammar (the probe found it on this real server: see test_the_probe_finds_guided_choice_only_where_it_works)
    assert teacher.mode == "next_token" and teacher.terminator is None and teacher.guided_field == "grammar"
    probs = ann.probs()
    assert ann.summary.failed == 0 and ann.frame["error"].isna().all()
    assert probs.shape == (N_ITEMS, 3) and np.allclose(probs.sum(1), 1)
    assert ((ann.frame["entropy"] >= 0) & (ann.frame["entropy"] <= math.log(3) + 1e-9)).all()
    assert set(ann.frame["label"]) <= set(s.train.label_names)
    assert (ann.frame["prompt_tokens"] > 100).all() and (ann.frame["model"] == teacher.model).all()
    assert ann.summary.labelled == N_ITEMS
    gold = [s.train.label_names[i] for i in s.train.labels[:N_ITEMS]]
    assert ann.summary.accuracy == pytest.approx(accuracy_score(gold, ann.frame["label"]))


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {CANARY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as reply:
        return json.loads(reply.read())


def test_the_label_is_the_servers_own_guided_choice(server, toxic, teacher, annotated):
    """The reference: the server's answer to a request this test writes itself, greedy under a GBNF grammar that
    allows only the label strings, on the same prompt. Where the server spelled the label in its own tokens (the
    labels' tokenisation, which the scores follow), greedy decoding over the label trie computed here from the
    scores must make the same choice; a grammar also allows smaller pieces, where the two may legitimately part."""
    s, _ = toxic
    ann, scored, _ = annotated
    names = list(s.train.label_names)
    vocab = llama_cpp.Llama(model_path=str(gguf_path("smollm2-135m")), vocab_only=True, verbose=False)
    try:
        canonical = {n: [vocab.detokenize([i]).decode() for i in vocab.tokenize(n.encode(), add_bos=False)]
                     for n in names}
    finally:
        vocab.close()
    followed = 0
    for k, text in enumerate(s.train.texts[:N_ITEMS]):
        reply = _post(server, {"model": "smol", "prompt": teacher._context(text), "temperature": 0, "max_tokens": 40,
                               "grammar": label_grammar(names), "logprobs": 1})
        answer = reply["choices"][0]["text"]
        assert answer == ann.frame["label"][k], (k, answer, ann.frame["label"][k])
        if reply["choices"][0]["logprobs"]["tokens"] == canonical[answer]:
            followed += 1
            assert answer == names[guided_choice(teacher.label_tokens, scored[k].token_logprobs)], k
    assert followed >= N_ITEMS - 1, followed


def test_p_s_is_the_sequence_probability_the_test_reads_from_the_server(server, toxic, teacher, annotated):
    """The reference, computed here: each label tokenised by llama.cpp's own vocabulary, and for each of its
    tokens one `max_tokens=1` request this test writes (the token forced by logit_bias, its log-probability read
    from the reply) after the prompt and the label's earlier tokens; the label's log-probability is their sum and
    P_S their softmax over the labels. Same server, same requests, but llama-cpp-python reuses its KV cache from
    the request before, so the tokens it evaluates come in other batch shapes of the quantised kernels: measured
    max |dP_S| 0.0058 over the 6 items (2.4e-5 on the first); the bound, 0.015, is 2.5x that, tighter than the
    cross-kernel check against the in-process teacher below (0.05), and a wrong prefix or label token moves P_S
    by 0.1 or more."""
    s, _ = toxic
    ann, _, _ = annotated
    names = list(s.train.label_names)
    vocab = llama_cpp.Llama(model_path=str(gguf_path("smollm2-135m")), vocab_only=True, verbose=False)
    try:
        ids = {n: vocab.tokenize(n.encode(), add_bos=False) for n in names}
        text_of = {n: [vocab.detokenize(ids[n][:j]).decode() for j in range(len(ids[n]))] for n in names}
    finally:
        vocab.close()
    assert [ids[n] for n in names] == teacher.label_tokens  # the label tokens the teacher scores are llama.cpp's
    diffs = []
    for k, text in enumerate(s.train.texts[:N_ITEMS]):
        logp = []
        for n in names:
            total = 0.0
            for j, token in enumerate(ids[n]):
                reply = _post(server, {"model": "smol", "prompt": teacher._context(text) + text_of[n][j],
                                       "max_tokens": 1, "temperature": 0, "logprobs": 1,
                                       "logit_bias": {str(token): 100}})
                total += reply["choices"][0]["logprobs"]["token_logprobs"][0]
            logp.append(total)
        want = np.exp(np.array(logp) - max(logp))
        want /= want.sum()
        diffs.append(float(np.abs(ann.probs()[k] - want).max()))
    assert max(diffs) < 0.015, diffs


def test_agrees_with_the_in_process_llamacpp_teacher(toxic, teacher, annotated):
    s, prompt = toxic
    ann, scored, _ = annotated
    texts = s.train.texts[:N_ITEMS]
    ref = get_teacher("llamacpp:smollm2-135m")  # same GGUF, same chat template, same prompt
    try:
        ref.prepare(prompt)
        want = ref.score(texts)
        # the same label tokens, less the terminator this server cannot score
        assert teacher.label_tokens == [t[:-1] for t in ref.label_tokens]
        got = ann.probs()
        for i, w in enumerate(want):
            p_ref = distribution(w.token_logprobs)
            # measured: at most 0.021 over 12 items (the missing terminator ~0.015, the kernels' batch shapes the
            # rest); the in-process engine's own batched-vs-naive test allows 0.08
            assert np.abs(got[i] - p_ref).max() < 0.05, (i, got[i], p_ref)
            second, first = np.sort(p_ref)[-2:]
            if first - second > 0.2:
                assert ann.frame["label"][i] == s.train.label_names[guided_choice(ref.label_tokens, w.token_logprobs)]
        for d, w in zip(scored, want):
            assert d.prompt_tokens == w.prompt_tokens  # the same chat-templated context, token for token
            for a, b in zip(d.token_logprobs, w.token_logprobs):
                assert_logprobs_close(a, b[:-1])
    finally:
        ref.close()


def test_the_api_key_never_leaks(server, toxic, teacher, annotated, all_logs, monkeypatch, caplog):
    ann, _, folder = annotated
    # the server refuses requests without the canary key, so every one of them carried it
    assert ann.summary.failed == 0
    assert CANARY not in teacher.model_id and CANARY not in ann.frame.to_csv()
    assert CANARY.encode() not in _files_bytes(folder)  # the SQLite store (and any journal beside it)
    assert any("scoring by next_token" in line for line in all_logs.lines)  # the capture saw prepare
    assert not any(CANARY in line for line in all_logs.lines)  # httpx's and httpcore's debug logs included
    wrong = f"sk-wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SilverlabelError, match="OPENAI_API_KEY") as refused:
        get_teacher(f"openai:{server}/v1#smol", chat_template=TEMPLATE).prepare(toxic[1])
    assert "401" in str(refused.value) and wrong not in str(refused.value) and wrong not in caplog.text


def test_echo_scoring_agrees_token_by_token_and_a_shifted_echo_is_refused(server):
    # a tiny raw prompt and two labels: llama-cpp-python's echo costs ~0.1 s per prompt token, once per label.
    # Starting with BOS, its echo is aligned; without, it pairs each token with the next position's values
    names = ("hate speech", "neither")
    prompt = Prompt(task="", label_names=names, demonstrations=Demonstrations(seed=0, examples=()),
                    template="<|im_start|>Is this toxic? {text}\nAnswer:")
    echo = _teacher(server, prompt, chat=False, scoring="echo")
    token = _teacher(server, prompt, chat=False, scoring="next_token")
    try:
        assert echo.mode == "echo" and echo.terminator == "<|im_end|>"  # echo scores the terminator too
        assert echo.cache_key(prompt) != token.cache_key(prompt)  # another scoring method, another key
        assert echo.model_id == token.model_id
        [e], [t] = echo.score(["you are an idiot"]), token.score(["you are an idiot"])
        assert e.error is None and t.error is None
        assert echo.label_tokens == [ids + [2] for ids in token.label_tokens]
        # the same model and context, but prompt + label evaluated in one batch against a cached prefix plus a
        # few tokens: the quantised kernels move log-probabilities by up to ~0.3 nats (measured 0.26 on an AVX2
        # EPYC, 0.0 on an AMX Xeon with its AMX buffers off); these labels' tokens are all unlikely ones
        for a, b in zip(e.token_logprobs, t.token_logprobs):
            assert_logprobs_close(a[:-1], b)
        p_echo = distribution([a[:-1] for a in e.token_logprobs])
        assert np.abs(p_echo - distribution(t.token_logprobs)).max() < 0.05, (p_echo, distribution(t.token_logprobs))
        shifted = Prompt(task="", label_names=names, demonstrations=Demonstrations(seed=0, examples=()),
                         template="Is this toxic? {text}\nAnswer:")
        # llama-cpp-python then also drops the generated token, so the echo ends one token early
        with pytest.raises(SilverlabelError, match="the echo is misaligned: its last prompt tokens are ': hate"):
            _teacher(server, shifted, chat=False, scoring="echo")
    finally:
        echo.close()
        token.close()


# ---------------------------------------------------------------------------------------------- faults
class FaultProxy(ThreadingHTTPServer):
    """Relays to the real server, except that /v1/completions requests take the next queued fault, or
    ``always`` when the queue is empty, and guided-choice requests get ``guided_answer``."""

    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that timed out closed the socket: expected
        pass

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.faults: collections.deque = collections.deque()
        self.always: str | None = None
        self.guided_answer: str | None = None
        self.strip: set[str] = set()  # request fields removed before relaying: a server that ignores them
        self.calls: list[str] = []  # what each /v1/completions request met, in arrival order
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet: the test reads self.server.calls
        pass

    def do_GET(self):
        self._relay(None)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        srv, fault = self.server, None
        if self.path.endswith("/completions"):
            with srv.lock:
                if srv.guided_answer is not None and "guided_choice" in json.loads(body):
                    fault = "guided"
                elif srv.faults:
                    fault = srv.faults.popleft()
                else:
                    fault = srv.always
                srv.calls.append(fault or "relay")
        if srv.strip and self.path.endswith("/completions"):
            request = json.loads(body)
            body = json.dumps({k: v for k, v in request.items() if k not in srv.strip}).encode()
        auth = self.headers.get("Authorization", "")
        usage = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
        if fault == "hang":  # longer than the client waits
            time.sleep(5.0)
            self._send(500, b"too late")
        elif fault == "500":  # an error page quoting the request's key
            self._send(500, f"internal error serving {auth}".encode(), "text/plain")
        elif fault == "429":
            self._send(429, b'{"error": "slow down"}', headers={"Retry-After": "1"})
        elif fault == "400":
            self._send(400, json.dumps({"error": f"bad request from {auth}"}).encode())
        elif fault == "garbage":
            self._send(200, b'{"choices": [{"text": "neith')
        elif fault == "nologprobs":
            self._send(200, json.dumps({"choices": [{"text": "neither", "logprobs": None}], "usage": usage}).encode())
        elif fault == "guided":
            self._send(200, json.dumps({"choices": [{"text": srv.guided_answer}], "usage": usage}).encode())
        else:
            self._relay(body)

    def _send(self, status: int, payload: bytes, ctype: str = "application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _relay(self, body):
        keep = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
        request = urllib.request.Request(self.server.upstream + self.path, data=body, method=self.command,
                                         headers=keep)
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                status, payload = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        self._send(status, payload)


@pytest.fixture(scope="module")
def proxied(server, toxic):
    proxy = FaultProxy(server)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    teacher = _teacher(proxy.url, toxic[1], max_retries=3)
    teacher.transport.backoff_base = 0.01  # keep the exponential backoff, in milliseconds
    yield proxy, teacher
    teacher.close()
    proxy.shutdown()
    proxy.server_close()


def test_retries_a_timeout_500_and_429_then_scores(proxied, teacher, toxic, caplog):
    import httpx

    proxy, t = proxied
    text = toxic[0].train.texts[0]
    caplog.set_level(logging.WARNING, logger="silverlabel")
    proxy.calls.clear()
    proxy.faults.extend(["hang", "500", "429"])
    # 4 s, not less: the real request after the faults must not time out on a busy two-core machine
    t._http().timeout, timeout = httpx.Timeout(4.0), t._http().timeout
    t.guided_field, guided = None, t.guided_field  # the retries are the point here, not one more generation
    try:
        started = time.monotonic()
        [got] = t.score([text])
        took = time.monotonic() - started
    finally:
        t._http().timeout = timeout
        t.guided_field = guided
    assert got.error is None
    assert proxy.calls[:4] == ["hang", "500", "429", "relay"]
    assert took >= 5.0  # the 4 s timeout, then Retry-After: 1
    assert "no reply within 60 s; retry 1 of 3" in caplog.text  # the teacher's timeout, as configured
    assert "HTTP 500; retry 2 of 3" in caplog.text and "HTTP 429; retry 3 of 3 in 1.00 s" in caplog.text
    [direct] = teacher.score([text])
    assert np.abs(distribution(got.token_logprobs) - distribution(direct.token_logprobs)).max() < 0.05


@pytest.mark.parametrize("fault, message", [
    ("500", "HTTP 500; still failing after 4 attempt"),
    ("400", "HTTP 400: {\"error\": \"bad request from Bearer [api key]\"}"),
    ("garbage", "the reply is not JSON"),
    ("nologprobs", "carries no token log-probabilities"),
])
def test_persistent_failures_are_item_errors_not_labels(proxied, toxic, tmp_path, fault, message):
    proxy, t = proxied
    s, prompt = toxic
    proxy.always = fault
    try:
        with AnnotationStore(tmp_path / "a.sqlite") as store:
            ann = t.annotate(s.train.items[:2], s.train.texts[:2], prompt, store=store)
    finally:
        proxy.always = None
    assert ann.summary.failed == 2 and ann.summary.labelled == 2
    assert ann.frame["label"].isna().all() and np.isnan(ann.probs()).all()
    assert all(message in e for e in ann.frame["error"]), ann.frame["error"].tolist()
    assert CANARY.encode() not in _files_bytes(tmp_path)


def test_a_server_guided_choice_is_the_label_and_anything_else_an_error(proxied, toxic):
    proxy, t = proxied
    s, _ = toxic
    t.guided_field, found = "guided_choice", t.guided_field  # as vLLM before 0.12 names it; served by the proxy
    try:
        proxy.guided_answer = "neither"
        [ok] = t.score(s.train.texts[:1])
        assert ok.error is None and ok.choice == 2
        proxy.guided_answer = "banana"
        [bad] = t.score(s.train.texts[:1])
        assert bad.choice is None and "'banana', which is not one of the labels" in bad.error
    finally:
        t.guided_field = found
        proxy.guided_answer = None


def test_the_probe_finds_guided_choice_only_where_it_works(proxied, toxic, teacher):
    """On the real server, prepare's probe found the grammar field (test_annotation_records_through_the_server);
    the same server with that field taken out of every request, as a server that ignores it would, is found to
    have no guided choice, and its labels are computed from the scores."""
    proxy, _ = proxied
    assert teacher.guided_field == "grammar"
    proxy.strip = {"grammar"}
    try:
        blind = _teacher(proxy.url, toxic[1])
        try:
            assert blind.guided_field is None and blind.mode == teacher.mode
            [scored] = blind.score(toxic[0].train.texts[:1])
            assert scored.choice is None and scored.error is None
        finally:
            blind.close()
    finally:
        proxy.strip = set()
