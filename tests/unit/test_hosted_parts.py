"""The hosted teachers' parts that need no server: P_S from top-k lists against hand arithmetic, the rate window
and retries on a fake clock, prices, the budget's arithmetic, option and key errors, and the store's migration.
The same parts against a real model: tests/integration/test_vllm_chat_teachers.py."""

import math
import sqlite3

import pytest

from silverlabel.cache import AnnotationStore, Record
from silverlabel.errors import SilverlabelError
from silverlabel.teachers import get_teacher
from silverlabel.teachers import transport as transport_module
from silverlabel.teachers.base import Usage, _Accumulator
from silverlabel.teachers.p_s_methods import AnswerFormat, Step, top_logprob_distribution
from silverlabel.teachers.transport import ItemFailed, RateWindow, Transient, Transport

L = math.log


def test_top_logprobs_two_labels_renormalised_at_the_deciding_position():
    steps = [Step("pos", L(0.6), {"pos": L(0.6), "neg": L(0.3), "Pos": L(0.05)}), Step("itive", L(0.99), {})]
    p, observed = top_logprob_distribution("positive", steps, ["positive", "negative"], 0)
    # 0.05 is unlisted; it could hold more spellings of the labels: at most 0.05 / (0.9 + 0.05) of the mass
    assert p == pytest.approx([0.6 / 0.9, 0.3 / 0.9]) and observed == pytest.approx(0.9 / 0.95)
    complete = [Step("pos", L(0.6), {"pos": L(0.6), "neg": L(0.4)})]
    assert top_logprob_distribution("pos", complete, ["pos", "neg"], 0) == (pytest.approx([0.6, 0.4]), 1.0)


def test_a_label_missing_from_the_top_k_gets_0_and_its_most_possible_mass_is_recorded():
    # "maybe" is not listed: its tokens lie in the unlisted 0.2 (1 - 0.5 - 0.2 - 0.1), each at most 0.1; after
    # renormalising over the labels' listed 0.7, the unlisted mass can take at most 0.2 / (0.7 + 0.2)
    steps = [Step("yes", L(0.5), {"yes": L(0.5), "no": L(0.2), "x": L(0.1)})]
    p, observed = top_logprob_distribution("yes", steps, ["yes", "no", "maybe"], 0)
    assert p == pytest.approx([0.5 / 0.7, 0.2 / 0.7, 0.0])
    assert observed == pytest.approx(0.7 / 0.9)
    # the bound holds for any mass m the unlisted label really had: TV = m / (0.7 + m) <= 1 - observed
    for m in (0.0, 0.1, 0.2):
        true = [0.5 / (0.7 + m), 0.2 / (0.7 + m), m / (0.7 + m)]
        assert 0.5 * sum(abs(a - b) for a, b in zip(p, true)) <= 1 - observed + 1e-12


def test_json_wrapped_answer_decides_inside_the_string():
    text = '{"label": "no"}'
    steps = [Step('{"', 0.0), Step("label", 0.0), Step('":', 0.0), Step(' "', 0.0),
             Step("no", L(0.7), {"no": L(0.7), "yes": L(0.2)}), Step('"}', 0.0)]
    p, observed = top_logprob_distribution(text, steps, ["yes", "no", "maybe"], 1)
    assert p == pytest.approx([0.2 / 0.9, 0.7 / 0.9, 0.0])
    assert observed == pytest.approx(0.9 / 1.0)
    assert AnswerFormat("json").label_of(text, ["yes", "no", "maybe"]) == 1


def test_multi_token_labels_part_at_their_own_positions():
    # "hate speech" and "hateful" share "hate"; the answer is "hate speech": "neither" parts at step 0, "hateful"
    # at step 1; each step renormalises over the labels still possible there
    steps = [Step("hate", L(0.5), {"hate": L(0.5), "ne": L(0.25)}),
             Step(" speech", L(0.3), {" speech": L(0.3), "ful": L(0.1)})]
    p, observed = top_logprob_distribution("hate speech", steps, ["hate speech", "hateful", "neither"], 0)
    go = 0.5 / 0.75
    assert p == pytest.approx([go * 0.75, go * 0.25, 0.25 / 0.75])
    assert observed == pytest.approx(0.75 / 1.0 * 0.4 / 1.0)  # z / (z + unlisted) at both parting positions


def test_no_listed_label_mass_is_the_items_failure_not_a_division_by_zero():
    from silverlabel.teachers.p_s_methods import Unusable

    with pytest.raises(Unusable, match="no probability for any label"):
        top_logprob_distribution("a", [Step("a", -9999.0, {"b": -9999.0})], ["a", "b"], 0)


def test_an_answer_outside_the_labels_names_none():
    fmt = AnswerFormat("instruction")
    assert fmt.label_of(" neither\n", ["neither", "hate"]) == 0
    assert fmt.label_of("Neither", ["neither", "hate"]) is None
    assert fmt.label_of("neither.", ["neither", "hate"]) is None
    assert AnswerFormat("json").label_of('{"label": "maybe"}', ["yes", "no"]) is None


def test_the_rate_window_spaces_requests_and_tokens_over_a_minute():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    w = RateWindow(requests_per_minute=2, clock=lambda: now[0], sleep=sleep)
    assert w.acquire() == 0 and w.acquire() == 0
    now[0] = 10.0
    assert w.acquire() == pytest.approx(50.0)  # the first start leaves the window at t = 60
    t = RateWindow(tokens_per_minute=100, clock=lambda: now[0], sleep=sleep)
    now[0] = 100.0
    t.acquire(60)
    now[0] = 130.0
    assert t.acquire(60) == pytest.approx(30.0)  # 60 + 60 > 100 until the first leaves at t = 160


def test_transport_retries_transient_failures_and_honours_retry_after(monkeypatch):
    waits = []
    monkeypatch.setattr(transport_module.time, "sleep", waits.append)
    tr = Transport(max_retries=3)
    tr.backoff_base = 0.2
    calls = iter([Transient("HTTP 429", 429, wait=1.5), Transient("HTTP 503", 503), "ok"])

    def attempt():
        x = next(calls)
        if isinstance(x, Exception):
            raise x
        return x

    assert tr.call(attempt, what="x") == "ok"
    assert waits[0] == 1.5  # the server's Retry-After, not the backoff
    assert 0.2 <= waits[1] <= 0.4  # backoff after the second try: half of 0.2 * 2 plus jitter up to as much


def test_transport_gives_up_as_the_items_error_with_the_key_redacted(monkeypatch):
    monkeypatch.setattr(transport_module.time, "sleep", lambda s: None)
    tr = Transport(max_retries=1)
    tr.secrets = ["sk-secret-123"]

    def attempt():
        raise Transient("HTTP 500 echoing sk-secret-123", 500)

    with pytest.raises(ItemFailed) as exc:
        tr.call(attempt, what="srv")
    assert str(exc.value) == "srv: HTTP 500 echoing [api key]; still failing after 2 attempt(s)"


def test_prices_per_million_tokens_with_cached_input_at_its_own_price():
    t = get_teacher("chat:http://127.0.0.1:9/v1#m", price_input=2.5, price_cached_input=1.25, price_output=10)
    usage = Usage(prompt_tokens=1000, cached_tokens=400, completion_tokens=30)
    assert t.cost(usage) == pytest.approx((600 * 2.5 + 400 * 1.25 + 30 * 10) / 1e6)
    no_cached_price = get_teacher("chat:http://127.0.0.1:9/v1#m", price_input=2.0, price_output=8)
    assert no_cached_price.cost(usage) == pytest.approx((1000 * 2.0 + 30 * 8) / 1e6)
    assert get_teacher("chat:http://127.0.0.1:9/v1#m").cost(usage) is None


def test_the_budget_prices_each_next_item_as_the_dearest_so_far():
    acc = _Accumulator(["a", "b"])
    assert acc.affordable(16, None) == 16
    assert acc.affordable(16, 1.0) == 1  # the first item alone, to learn a price
    acc.spend([Record("h1", "a", [1, 0], 0.0, 10, 0.1, cost=0.03), Record("h2", "a", [1, 0], 0.0, 10, 0.1,
                                                                          cost=0.05)])
    assert acc.cost == pytest.approx(0.08) and acc.max_item_cost == 0.05
    assert acc.affordable(16, 0.3) == 4  # (0.3 - 0.08) / 0.05 = 4.4
    assert acc.affordable(2, 0.3) == 2
    assert acc.affordable(16, 0.1) == 0
    free = _Accumulator(["a", "b"])
    free.spend([Record("h", None, None, None, 0, 0.1, "failed", cost=0.0)])
    assert free.affordable(16, 1.0) == 1  # a free (failed) item teaches no price: still one at a time


def test_option_and_key_errors_name_what_to_set(monkeypatch):
    with pytest.raises(SilverlabelError, match="max_cost needs the prices: set price_input and price_output"):
        get_teacher("chat:http://127.0.0.1:9/v1#m", max_cost=1)
    with pytest.raises(SilverlabelError, match=r"teacher options for 'chat': p_s_method: Input should be 'auto'"):
        get_teacher("chat:http://127.0.0.1:9/v1#m", p_s_method="logits")
    with pytest.raises(SilverlabelError, match="top_logprobs: Input should be less than or equal to 20"):
        get_teacher("chat:http://127.0.0.1:9/v1#m", top_logprobs=50)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(SilverlabelError, match="no API key; set the environment variable OPENAI_API_KEY"):
        get_teacher("chat:https://api.openai.com/v1#gpt-4o-mini").api  # noqa: B018
    with pytest.raises(SilverlabelError, match="set the environment variable ANTHROPIC_API_KEY"):
        get_teacher("anthropic:claude-haiku-4-5").api  # noqa: B018
    with pytest.raises(SilverlabelError, match="a chat API takes messages only"):
        get_teacher("chat:http://127.0.0.1:9/v1#m", chat=False)
    with pytest.raises(SilverlabelError, match=r"teacher 'chat:http://x' names no model; write chat:BASE_URL#MODEL"):
        get_teacher("chat:http://x")


def test_an_older_store_gains_the_new_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE annotations (model TEXT NOT NULL, prompt TEXT NOT NULL, text_hash TEXT NOT NULL,
        label TEXT, probs TEXT, entropy REAL, prompt_tokens INTEGER, seconds REAL, error TEXT,
        PRIMARY KEY (model, prompt, text_hash)) WITHOUT ROWID;""")
    db.execute("INSERT INTO annotations VALUES ('m', 'p', 'h1', 'a', '[0.9, 0.1]', 0.3, 12, 0.5, NULL)")
    db.commit()
    db.close()
    with AnnotationStore(path) as store:
        old = store.get_many("m", "p", ["h1"])["h1"]
        assert (old.label, old.probs, old.prompt_tokens, old.p_s_method, old.cost) == ("a", [0.9, 0.1], 12, None,
                                                                                          None)
        store.put_many("m", "p", [Record("h2", "b", [0.2, 0.8], 0.5, 40, 0.1, p_s_method="top_logprobs",
                                         observed=0.97, completion_tokens=3, cached_tokens=32, requests=1,
                                         cost=0.0012)])
        new = store.get_many("m", "p", ["h2"])["h2"]
        assert (new.p_s_method, new.observed, new.completion_tokens, new.cached_tokens, new.requests, new.cost) == (
            "top_logprobs", 0.97, 3, 32, 1, 0.0012)
