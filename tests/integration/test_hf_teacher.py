"""The hf teacher on the shipped SmolLM2-135M GGUF loaded through transformers: the batched scoring over the
shared prefix's KV cache (padding between prefix and item, labels in a second pass) must give what scoring each
full prompt from scratch gives, and the URI, cache key and terminator must be right."""

import struct
import threading

import numpy as np
import pytest

from silverlabel.errors import SilverlabelError
from silverlabel.teachers import get_teacher
from silverlabel.teachers.hf_causal import parse_model
from silverlabel.teachers.trie import distribution

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def teacher(hf_smol, toxic):
    hf_smol.prepare(toxic[1])
    return hf_smol


def test_labels_end_with_the_chat_templates_end_of_turn(teacher):
    assert {t[-1] for t in teacher.label_tokens} == {teacher._tok.convert_tokens_to_ids("<|im_end|>")}
    assert all(len(t) >= 3 for t in teacher.label_tokens)  # multi-token labels: the second pass is exercised


def test_batched_cached_prefix_matches_scoring_each_prompt_from_scratch(teacher, toxic):
    s, _ = toxic
    # items of different lengths in one batch, so the left padding after the prefix matters
    texts = sorted(s.train.texts[:40], key=len)[::15][:3]  # three from scratch cost ~100 s on two busy cores
    assert len({len(teacher.token_prompt.item_tokens(t)) for t in texts}) == 3
    batched = teacher.score(texts)
    for text, scored in zip(texts, batched):
        naive = teacher.score_naive(text)
        assert [len(x) for x in naive] == [len(x) for x in scored.token_logprobs]
        # float32 on CPU: only summation order differs (measured max 1.3e-5 nats)
        assert np.abs(np.concatenate(naive) - np.concatenate(scored.token_logprobs)).max() < 1e-3
        assert np.isclose(distribution(scored.token_logprobs).sum(), 1)
        assert scored.prompt_tokens == len(teacher.prefix_tokens) + len(teacher.token_prompt.item_tokens(text))


def test_a_long_item_is_cut_to_fit_and_keeps_the_prompts_ending(teacher, toxic):
    long_text = "this is a very long tweet " * 200  # ~1200 tokens
    limit, teacher._limit = teacher._limit, 400
    try:
        [short, cut] = teacher.score([toxic[0].train.texts[0], long_text])
        assert len(teacher.token_prompt.vocab.tokens(long_text, special=False)) > 400
        assert cut.prompt_tokens + max(len(t) for t in teacher.label_tokens) <= 400
        assert short.prompt_tokens < cut.prompt_tokens
        ending = teacher.token_prompt.suffix_tokens
        assert teacher.token_prompt.item_tokens(long_text)[-len(ending):] == ending
    finally:
        teacher._limit = limit


def test_model_id_names_the_weights_and_the_dtype_and_is_not_llamacpps(teacher):
    assert teacher.model_id.startswith("hf:smollm2-135m@") and teacher.model_id.endswith(":float32")
    assert teacher.model_id != get_teacher("llamacpp:smollm2-135m").model_id  # other kernels, other scores
    assert teacher.cache_key(teacher.prompt) != get_teacher("hf:smollm2-135m", chat=False).cache_key(teacher.prompt)
    import gguf  # the load cached gguf-py's reader and name map (hf_causal._gguf_read_once) for itself only

    assert isinstance(gguf.GGUFReader, type) and not hasattr(gguf.get_tensor_name_map, "cache_info")


def test_uri_forms_and_errors(tmp_path):
    from silverlabel.assets import gguf_path

    shipped = gguf_path("smollm2-135m")
    # by short name: the shipped Q4_1 file, which transformers dequantizes to float32 (not llama.cpp's F16 copy)
    by_name = parse_model("smollm2-135m")
    assert by_name["path"] == shipped
    # its cache key names the shipped file (llama.cpp's teacher adds "/F16": its labels come from other weights)
    assert by_name["id"] == "smollm2-135m@b179c9523d0e"  # the pinned sha256's first 12 digits (offline-assets.md)
    by_path = parse_model(str(shipped))
    assert (by_path["source"], by_path["gguf_file"]) == (str(shipped.parent), shipped.name)
    in_dir = parse_model(f"{shipped.parent}#{shipped.name}")
    assert in_dir["gguf_file"] == shipped.name and in_dir["local"]
    hub = parse_model("Qwen/Qwen2.5-0.5B-Instruct-GGUF@main#qwen2.5-0.5b-instruct-q4_k_m.gguf")
    assert hub == {"source": "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "gguf_file": "qwen2.5-0.5b-instruct-q4_k_m.gguf",
                   "revision": "main", "local": False, "path": None, "id": None}
    with pytest.raises(SilverlabelError, match="not found"):
        parse_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(SilverlabelError, match="not found"):
        parse_model(str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(SilverlabelError, match="no config.json"):
        parse_model(str(tmp_path))
    with pytest.raises(SilverlabelError, match="after '#' comes a .gguf"):
        parse_model("org/model#weights.bin")
    with pytest.raises(SilverlabelError, match="dtype"):
        get_teacher("hf:smollm2-135m", dtype="float8")


def test_a_gguf_is_read_once_per_load_and_threads_take_turns(tmp_path):
    """_gguf_read_once patches gguf-py for a load so the file is parsed once; a second load in another thread waits
    for the first, so the first's patch is never taken for the original and left behind (the reader it caches maps
    the whole file)."""
    from silverlabel.teachers.hf_causal import _gguf_read_once
    from tests.helpers import require

    require("gguf", "pip install 'silverlabel[hf]'")
    import gguf

    tiny = tmp_path / "tiny.gguf"  # GGUF v3, no tensors, one key: general.architecture = "llama"
    key = b"general.architecture"
    tiny.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
                     + struct.pack("<IQ", 8, 5) + b"llama")
    original, errors = gguf.GGUFReader, []
    with _gguf_read_once():
        assert gguf.GGUFReader(str(tiny)) is gguf.GGUFReader(str(tiny))  # parsed once: the config's and weights'
    assert gguf.GGUFReader(str(tiny)) is not gguf.GGUFReader(str(tiny))  # and only during the load
    first_in, first_may_leave, first_left = threading.Event(), threading.Event(), threading.Event()

    def load(entered, leave_after):
        try:
            with _gguf_read_once():
                entered.set()
                assert gguf.GGUFReader is not original
                assert leave_after.wait(10)
        except BaseException as exc:  # an assert in a thread would only print
            errors.append(exc)

    first = threading.Thread(target=load, args=(first_in, first_may_leave))
    second_in = threading.Event()
    second = threading.Thread(target=load, args=(second_in, first_left))  # stays in until the first has left
    first.start()
    assert first_in.wait(10)
    second.start()
    # without the turn-taking the second is in by now, holding the first's patch as the original, and restores it
    # after the first has restored the real one; with it, the second waits for the first to leave
    second_in.wait(0.3)
    first_may_leave.set()
    first.join(10)
    first_left.set()
    second.join(10)
    assert not errors and second_in.is_set() and not first.is_alive() and not second.is_alive()
    assert gguf.GGUFReader is original and not hasattr(gguf.get_tensor_name_map, "cache_info")
