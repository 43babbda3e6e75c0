"""The llama.cpp teacher on the shipped SmolLM2-135M model: the batched shared-prefix engine must give the
same distribution as scoring each full prompt from scratch, labels must be the guided-decoding choice, and
cached items must never be scored again. The label is checked against llama.cpp's own generation under a label
grammar in test_teacher_contract.py, for every backend."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from silverlabel.cache import AnnotationStore
from silverlabel.errors import SilverlabelError
from silverlabel.teachers import get_teacher
from silverlabel.teachers.trie import distribution
from tests.helpers import require

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def teacher(toxic):
    t = get_teacher("llamacpp:smollm2-135m", batch_items=4)
    t.prepare(toxic[1])
    yield t
    t.close()


def test_multi_token_labels_end_with_the_chat_terminator(teacher):
    assert [len(t) for t in teacher.label_tokens][:2] != [2, 2]  # "hate speech", "offensive language": >1 token
    terminators = {t[-1] for t in teacher.label_tokens}
    assert len(terminators) == 1
    assert teacher._llm._model.token_get_text(terminators.pop()) == "<|im_end|>"


def test_batched_engine_matches_scoring_each_prompt_from_scratch(toxic, teacher, monkeypatch):
    s, _ = toxic
    texts = s.train.texts[:3]  # two calls (2 + 1 items): the prefix shared within a call and across calls
    monkeypatch.setattr(teacher, "batch_items", 2)  # each naive prompt costs ~1.5 s on one core: 3, not 6
    batched = teacher.score(texts)
    for text, scored in zip(texts, batched):
        naive = teacher.score_naive(text)
        assert [len(x) for x in naive] == [len(x) for x in scored.token_logprobs]
        p_batch, p_naive = distribution(scored.token_logprobs), distribution(naive)
        # llama.cpp's kernels differ with batch shape, so allow float noise, not a different answer. Measured on
        # the first 24 items at batch_items 4 and 16: max |dP_S| 0.016, mean 0.004; the bound is 2.5x that max
        # (other CPUs' kernels batch differently); a prefix or item token out of place moves P_S by 0.1 or more
        assert np.abs(p_batch - p_naive).max() < 0.04
        assert scored.prompt_tokens > len(teacher.prefix_tokens)


def test_annotation_records_distribution_entropy_and_guided_label(toxic, teacher, tmp_path):
    s, prompt = toxic
    texts, items = s.train.texts[:8], s.train.items[:8]
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        ann = teacher.annotate(items, texts, prompt, store=store, gold=s.train.labels[:8])
        probs = ann.probs()
        assert probs.shape == (8, 3) and np.allclose(probs.sum(1), 1)
        assert ((ann.frame["entropy"] >= 0) & (ann.frame["entropy"] <= math.log(3) + 1e-9)).all()
        assert set(ann.frame["label"]) <= set(s.train.label_names)
        assert list(ann.frame.columns[:4]) == ["item", "text", "label", "entropy"]
        assert {"p:hate speech", "p:offensive language", "p:neither", "model", "demo_seed", "prompt_tokens",
                "seconds"} <= set(ann.frame.columns)
        assert ann.summary.labelled == 8 and ann.summary.cached == 0
        gold = [s.train.label_names[i] for i in s.train.labels[:8]]
        assert ann.summary.accuracy == pytest.approx(accuracy_score(gold, ann.frame["label"]))

        def boom(_texts):
            raise AssertionError("a cached item was scored again")

        teacher.score, original = boom, teacher.score
        try:
            again = teacher.annotate(items, texts, prompt, store=store)
        finally:
            teacher.score = original
        assert again.summary.cached == 8 and again.summary.labelled == 0
        assert again.frame["label"].tolist() == ann.frame["label"].tolist()


def test_raw_prompt_is_a_different_cache_key(toxic):
    raw = get_teacher("llamacpp:smollm2-135m", chat=False)
    chat = get_teacher("llamacpp:smollm2-135m")
    assert raw.cache_key(toxic[1]) != chat.cache_key(toxic[1])
    prefix, item = raw.render(toxic[1])
    assert "<|im_start|>" not in prefix and item.endswith("Label:")


def test_missing_and_truncated_model_files(tmp_path):
    with pytest.raises(SilverlabelError, match="not found"):
        get_teacher(f"llamacpp:{tmp_path / 'missing.gguf'}")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOTGGUF" + b"\0" * 100)
    with pytest.raises(SilverlabelError, match="bad magic"):
        get_teacher(f"llamacpp:{bad}")


def test_truncated_gguf_is_a_clear_error(tmp_path, toxic):
    from silverlabel.assets import gguf_path

    src = gguf_path("smollm2-135m")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(src.read_bytes()[: 5_000_000])
    teacher = get_teacher(f"llamacpp:{cut}")
    with pytest.raises(SilverlabelError, match="could not load"):
        teacher.prepare(toxic[1])


def _dequantize_by_hand(raw: np.ndarray, ggml_type: str, shape) -> np.ndarray:
    """ggml's block layouts read from the bytes here (ggml-common.h), independent of gguf-py's dequantize, which
    the product uses: Q4_1 blocks are fp16 d, fp16 m and 16 bytes holding 32 4-bit q (low nibbles are weights
    0-15, high nibbles 16-31), weight = d q + m; Q8_0 blocks are fp16 d and 32 int8 q, weight = d q."""
    blocks = raw.reshape(-1, {"Q4_1": 20, "Q8_0": 34}[ggml_type])
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    if ggml_type == "Q4_1":
        m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
        qs = blocks[:, 4:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
        values = d * q + m
    else:
        values = d * blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    return values.reshape(shape)


def test_the_f16_copy_holds_the_shipped_weights_and_metadata(tmp_path, monkeypatch):
    """smollm2-135m runs as an F16 copy (assets.engine_gguf_path: llama.cpp's CPU GEMM kernels take F16, not
    Q4_1). Every weight of the copy must be the shipped Q4_1/Q8_0 weight, dequantized by hand here and rounded
    to fp16 (exactly: the same IEEE operations), every metadata field the same but the file type, and the teacher's
    cache key must name the copy, so annotations made with the Q4_1 file are never served for it."""
    require("gguf", "pip install 'silverlabel[llamacpp]'")
    import gguf

    from silverlabel import assets
    from silverlabel.teachers.llamacpp import resolve_gguf

    monkeypatch.setenv("SILVERLABEL_CACHE", str(tmp_path / "cache"))
    shipped, copy = assets.gguf_path("smollm2-135m"), assets.engine_gguf_path("smollm2-135m")
    assert copy != shipped and copy.parent == tmp_path / "cache" / "models"
    a, b = gguf.GGUFReader(shipped), gguf.GGUFReader(copy)
    kinds = {}
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        assert ta.name == tb.name and list(ta.shape) == list(tb.shape)
        kind = ta.tensor_type.name
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "F32":
            assert tb.tensor_type.name == "F32" and np.array_equal(ta.data, tb.data)
        else:
            assert tb.tensor_type.name == "F16"
            want = _dequantize_by_hand(np.asarray(ta.data), kind, tb.data.shape).astype(np.float16)
            assert np.array_equal(np.asarray(tb.data), want), ta.name
    assert kinds == {"Q4_1": 210, "Q8_0": 1, "F32": 61}  # the shipped file's types, all checked above
    fields = {k: (f.types, f.contents()) for k, f in a.fields.items() if not k.startswith("GGUF.")}
    copied = {k: (f.types, f.contents()) for k, f in b.fields.items() if not k.startswith("GGUF.")}
    assert copied.pop("general.file_type")[1] == int(gguf.LlamaFileType.MOSTLY_F16)
    assert fields.pop("general.file_type")[1] == int(gguf.LlamaFileType.MOSTLY_Q4_1)
    assert copied == fields
    path, model_id = resolve_gguf("smollm2-135m")
    assert path == copy and model_id == f"smollm2-135m@{assets.GGUF_ASSETS['smollm2-135m'].sha256[:12]}/F16"
    made = copy.stat().st_mtime_ns
    assert assets.engine_gguf_path("smollm2-135m").stat().st_mtime_ns == made  # made once, then reused


def test_a_killed_conversion_leaves_nothing_and_concurrent_ones_share_one_file(tmp_path):
    """A temporary file a killed conversion left is removed by the next one; two processes converting into one
    fresh cache at once both get the whole file (the lock makes one wait), and no temporary file remains."""
    from silverlabel.assets import GGUF_ASSETS
    from silverlabel.files import temp_path

    cache = tmp_path / "cache"
    target = cache / "models" / f"smollm2-135m-{GGUF_ASSETS['smollm2-135m'].sha256[:12]}-f16.gguf"
    target.parent.mkdir(parents=True)
    temp_path(target).write_bytes(b"GGUF half")  # what a SIGKILL mid-conversion leaves
    code = "from silverlabel.assets import engine_gguf_path; print(engine_gguf_path('smollm2-135m'))"
    env = {**os.environ, "SILVERLABEL_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs == [str(target)] * 2
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name, target.name + ".lock"]
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(target), n_ctx=64, verbose=False)  # the whole file loads
    assert llm.n_vocab() == 49152
    llm.close()


def test_shipped_model_failing_its_checksum(monkeypatch):
    from silverlabel import assets

    broken = assets.ModelAsset(**{**assets.GGUF_ASSETS["smollm2-135m"].__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(assets.GGUF_ASSETS, "smollm2-135m", broken)
    with pytest.raises(SilverlabelError, match="fails its checksum"):
        assets.gguf_path("smollm2-135m")


def test_an_item_longer_than_the_context_is_cut_not_fatal(toxic):
    t = get_teacher("llamacpp:smollm2-135m", n_ctx=1024)
    try:
        t.prepare(toxic[1])
        long_text = "this is a very long tweet " * 400  # ~2400 tokens, more than the context holds
        short, cut = t.score([toxic[0].train.texts[0], long_text])
        assert cut.error is None and cut.prompt_tokens + sum(len(x) for x in t.label_tokens) <= 1024
        assert np.isclose(distribution(cut.token_logprobs).sum(), 1)
        # the prompt's ending survives the cut: its last tokens are the chat suffix
        ending = t.token_prompt.suffix_tokens
        assert t.token_prompt.item_tokens("x")[-len(ending):] == ending
        assert short.prompt_tokens < cut.prompt_tokens
    finally:
        t.close()


def test_amx_buffers_are_off_exactly_where_the_build_has_amx():
    """llama.cpp's AMX weight buffers segfault on the first decode (teachers/llamacpp.py): the guard turns the
    extra buffer types off where, and only where, the build reports AMX_INT8 (read here from llama.cpp itself), so
    an AVX2 machine keeps its repacked weights and the README's numbers. On an AMX machine every other llama.cpp
    test here would also crash without it; on another machine a guard that never applies cannot be told apart."""
    from tests.helpers import require

    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    import llama_cpp
    from llama_cpp import llama_cpp as lib

    from silverlabel.teachers.llamacpp import avoid_amx_buffers

    amx = "AMX_INT8 = 1" in lib.llama_print_system_info().decode(errors="replace")
    assert avoid_amx_buffers(llama_cpp) is amx
    assert avoid_amx_buffers(llama_cpp) is amx  # idempotent: applied once
    assert bool(lib.llama_model_default_params().use_extra_bufts) is (not amx)
