"""The openai teacher against a fault-injecting OpenAI-compatible server on 127.0.0.1 (tests/fault_server.py: a toy
model with known log-probabilities, so every right answer is known): 500s, 429 with Retry-After, timeouts,
dropped connections, truncated and malformed replies, missing or impossible log-probabilities, labels outside the
set. Transient faults are retried with exponential backoff up to a bound; what still fails is the item's
``error``, never a label; a rerun on the same store asks the server only for the failed items.

The same through the command line: the annotate summary counts the failures, and the rerun retries only them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from silverlabel.cache import AnnotationStore
from silverlabel.teachers import Prompt, get_teacher
from silverlabel.teachers.prompts import Demonstrations
from tests.fault_server import fault_server
from tests.helpers import cli_in_process, require

KEY = "sk-fault-test-key-0123456789"
N_ITEMS = 24
MAX_RETRIES = 3
BACKOFF = 0.1  # seconds before the first retry, doubling
TIMEOUT = 0.5

# marker -> faults met one after the other, then a clean reply: all of these must end labelled
TRANSIENT = {
    "i01": ["500"], "i02": ["429"], "i03": ["hang"], "i04": ["drop"], "i05": ["truncated"],
    "i06": ["503", "500", "429"], "i07": ["500", "500", "500"],
}
# marker -> (the fault on every request, what the item's error must say): retried up to the bound, then failed
PERSISTENT = {
    "i08": ("500", "HTTP 500; still failing after 4 attempt(s)"),
    "i09": ("drop", "connection failed (RemoteProtocolError); still failing after 4 attempt(s)"),
    "i10": ("hang", f"no reply within {TIMEOUT:g} s; still failing after 4 attempt(s)"),
    "i17": ("truncated", "still failing after 4 attempt(s)"),
}
# marker -> (one bad reply, what the item's error must say): an unusable reply fails the item
UNUSABLE = {
    "i11": ("garbage", "the reply is not JSON"),
    "i12": ("nologprobs", "carries no token log-probabilities"),
    "i13": ("nan", "is not a log-probability: 3.5"),
    "i14": ("nochoices", "the reply has no choices"),
    "i15": ("offlabel", "guided choice returned 'banana', which is not one of the labels"),
    "i16": ("400", "HTTP 400: {\"error\": \"bad request from Bearer [api key]\"}"),
}
FAILING = set(PERSISTENT) | set(UNUSABLE)


def _texts() -> list[str]:
    words = ["a calm", "an odd", "a loud", "a dull", "a bright", "a grim"]
    return [f"{words[i % len(words)]} story number {i} <<i{i:02d}>> ends here" for i in range(N_ITEMS)]


PROMPT = Prompt(task="Classify the story.", label_names=("pos", "neg"),
                demonstrations=Demonstrations(seed=0, examples=(("a fine day <<demo>>", "pos"),)))


@pytest.fixture(scope="module")
def server():
    require("httpx", "pip install 'silverlabel[openai]'")
    with fault_server(api_key=KEY) as srv:
        yield srv


def _teacher(srv, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    t = get_teacher(f"openai:{srv.url}/v1#toy", chat=False, max_retries=MAX_RETRIES, timeout=TIMEOUT)
    t.transport.backoff_base = BACKOFF
    srv.hang_s = 3 * TIMEOUT
    return t


def _annotate(t, path, srv):
    items = [f"item{i}" for i in range(N_ITEMS)]
    with AnnotationStore(path) as store:
        return t.annotate(items, _texts(), PROMPT, store=store)


def _markers(frame: pd.DataFrame) -> list[str]:
    return [f"i{i:02d}" for i in range(len(frame))]


def test_faults_are_retried_counted_per_item_and_a_rerun_retries_only_them(server, tmp_path, monkeypatch):
    t = _teacher(server, monkeypatch)
    try:
        server.clear()
        ref = _annotate(t, tmp_path / "reference.sqlite", server)  # no faults: the right answers
        assert ref.summary.failed == 0 and t.mode == "echo" and t.guided_field == "structured_outputs"

        server.clear()
        for marker, faults in TRANSIENT.items():
            server.schedule(marker, *faults)
        for marker, (fault, _) in PERSISTENT.items():
            server.schedule(marker, forever=fault)
        for marker, (fault, _) in UNUSABLE.items():
            server.schedule(marker, fault)
        ann = _annotate(t, tmp_path / "a.sqlite", server)
        frame, markers = ann.frame, _markers(ann.frame)

        # what still failed is counted and each failed item says why; it has no label and no distribution
        failed = {m for m, e in zip(markers, frame["error"]) if isinstance(e, str)}
        assert failed == FAILING, frame["error"].tolist()
        assert ann.summary.failed == len(FAILING) and sum(ann.summary.label_counts.values()) == N_ITEMS - len(FAILING)
        for m, (_, message) in {**PERSISTENT, **UNUSABLE}.items():
            row = markers.index(m)
            assert message in frame["error"][row], (m, frame["error"][row])
            assert pd.isna(frame["label"][row]) and np.isnan(ann.probs()[row]).all()
        assert not any(KEY in e for e in frame["error"].dropna())  # servers quoting the key back: redacted

        # everything else got exactly the fault-free answer
        ok = [i for i, m in enumerate(markers) if m not in FAILING]
        assert frame["label"][ok].tolist() == ref.frame["label"][ok].tolist()
        assert np.array_equal(ann.probs()[ok], ref.probs()[ok])

        # retries: each transient fault was met, then a clean reply; the persistent ones stop at the bound
        for m, faults in TRANSIENT.items():
            seen = [what for _, what in server.requests_for(m)]
            assert seen[:len(faults) + 1] == [*faults, "ok"], (m, seen)
        for m, (fault, _) in PERSISTENT.items():
            seen = [what for _, what in server.requests_for(m)]
            assert seen == [fault] * (MAX_RETRIES + 1), (m, seen)  # the bound: 1 try + MAX_RETRIES retries
        # exponential backoff: before retry k the teacher waits at least half of BACKOFF * 2**k (full jitter on
        # the upper half), so the third wait is at least twice the first one's ceiling
        times = [when for when, _ in server.requests_for("i07")][:4]
        gaps = np.diff(times)
        for k, gap in enumerate(gaps):
            assert gap >= BACKOFF * 2 ** k / 2 - 0.01, (k, gaps)
        assert gaps[2] >= 2 * BACKOFF - 0.01
        # 429: the Retry-After the server asked for, not the shorter backoff
        times = [when for when, _ in server.requests_for("i02")][:2]
        assert times[1] - times[0] >= float(server.retry_after) - 0.01

        # a rerun on the same store asks the server only for the failed items, and now labels them right
        server.clear()
        again = _annotate(t, tmp_path / "a.sqlite", server)
        assert {m for _, m, _ in server.log} == FAILING
        assert again.summary.cached == N_ITEMS - len(FAILING) and again.summary.labelled == len(FAILING)
        assert again.summary.failed == 0
        assert again.frame["label"].tolist() == ref.frame["label"].tolist()
        assert np.array_equal(again.probs(), ref.probs())
        with AnnotationStore(tmp_path / "a.sqlite") as store:
            rows = list(store.iter_all())
        assert len(rows) == N_ITEMS and all(r["error"] is None for r in rows)  # retried rows replaced, not added
        injected = sum(len(f) for f in TRANSIENT.values()) + len(UNUSABLE) + len(PERSISTENT) * (MAX_RETRIES + 1)
        print(f"\nserver faults: {injected} injected over {len(TRANSIENT) + len(FAILING)} items; "
              f"{len(TRANSIENT)} items survived them by retrying, {len(FAILING)} reported as item errors "
              f"({len(FAILING)} labelled by the rerun), 0 mapped to a label")
    finally:
        t.close()


def test_a_server_down_mid_run_fails_items_not_the_run(server, tmp_path, monkeypatch):
    """Every request failing after prepare (a server gone mid-run) gives failed items and a summary, not a crash
    that loses the batch; the rerun labels them."""
    t = _teacher(server, monkeypatch)
    t.max_retries = 1
    try:
        server.clear()
        t.prepare(PROMPT)
        for i in range(N_ITEMS):
            server.schedule(f"i{i:02d}", forever="500")
        ann = _annotate(t, tmp_path / "a.sqlite", server)
        assert ann.summary.failed == N_ITEMS and ann.frame["label"].isna().all()
        server.clear()
        again = _annotate(t, tmp_path / "a.sqlite", server)
        assert again.summary.failed == 0 and again.summary.cached == 0 and again.summary.labelled == N_ITEMS
    finally:
        t.close()


def test_the_command_line_counts_failures_and_the_rerun_retries_only_them(server, tmp_path, monkeypatch):
    """`silverlabel annotate` against the fault server: the output has the error column and no label for failed
    items, the summary counts them, and the same command again labels just those."""
    data = tmp_path / "stories.csv"
    texts = _texts() + [t.replace("<<i", "<<j") for t in _texts()]
    pd.DataFrame({"text": texts, "label": ["pos", "neg"] * N_ITEMS}).to_csv(data, index=False)
    server.clear()
    bad = {"garbage": "the reply is not JSON", "offlabel": "not one of the labels", "400": "HTTP 400"}
    schedule = {}
    for i, text in enumerate(texts):
        marker = text.split("<<")[1].split(">>")[0]
        fault = list(bad)[i % 3] if i % 4 == 0 else "500"  # every 4th item unusable once, the rest a 500 once
        server.schedule(marker, fault)
        schedule[marker] = fault
    out = tmp_path / "ann.csv"
    args = ["annotate", str(data), "--out", str(out), "--teacher", f"openai:{server.url}/v1#toy", "--raw-prompt",
            "--k", "0", "--n-train", "30", "--n-test", "10", "--cache", str(tmp_path / "c.sqlite")]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    r = cli_in_process(monkeypatch, *args)  # the console script's entry point, in this process
    assert r.returncode == 0, r.stderr[-3000:]
    ann = pd.read_csv(out)
    ann["marker"] = ann["text"].str.extract(r"<<(\w+)>>")[0]
    failed = ann[ann["error"].notna()]
    assert set(failed["marker"]) == {m for m in ann["marker"] if schedule[m] in bad}
    assert failed["label"].isna().all()
    for _, row in failed.iterrows():
        assert bad[schedule[row["marker"]]] in row["error"]
    assert f"{len(failed)} failed" in " ".join(r.stdout.split())
    assert KEY not in r.stdout + r.stderr + out.read_text()

    server.clear()
    again = cli_in_process(monkeypatch, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    said = " ".join(again.stdout.split())
    assert f"({len(ann) - len(failed)} cached, {len(failed)} labelled, 0 failed)" in said, said
    assert {m for _, m, _ in server.log if m is not None} == set(failed["marker"])
    assert pd.read_csv(out)["error"].isna().all()
