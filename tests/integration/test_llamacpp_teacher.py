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


# ggml types by number (ggml.h) and their storage: (bytes per block, weights per block)
GGML_TYPES = {0: ("F32", 4, 1), 1: ("F16", 2, 1), 3: ("Q4_1", 20, 32), 8: ("Q8_0", 34, 32)}


def _read_gguf(path) -> tuple[dict[str, tuple[int, bytes]], dict[str, tuple[str, tuple, np.ndarray]]]:
    """GGUF's layout read here with struct, independent of gguf-py, which the product's copy uses: every metadata
    value as (type, its raw bytes), every tensor as (ggml type, dims, its bytes)."""
    import struct

    data = open(path, "rb").read()
    pos = 0

    def take(fmt):
        nonlocal pos
        out = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return out[0] if len(out) == 1 else out

    def string():
        nonlocal pos
        n = take("Q")
        pos += n
        return data[pos - n:pos].decode()

    sizes = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def skip_value(kind):
        if kind == 8:
            string()
        elif kind == 9:
            item, n = take("IQ")
            for _ in range(n):
                skip_value(item)
        else:
            take(sizes[kind])

    assert take("4s") == b"GGUF" and take("I") == 3
    n_tensors, n_kv = take("QQ")
    fields = {}
    for _ in range(n_kv):
        key, kind = string(), take("I")
        begin = pos
        skip_value(kind)
        fields[key] = (kind, data[begin:pos])
    infos = []
    for _ in range(n_tensors):
        name, n_dims = string(), take("I")
        dims = tuple(take("Q") for _ in range(n_dims))
        infos.append((name, dims, take("I"), take("Q")))
    alignment = struct.unpack("<I", fields["general.alignment"][1])[0] if "general.alignment" in fields else 32
    assert all(offset % alignment == 0 for *_, offset in infos)  # every tensor where the alignment puts it
    base = -(-pos // alignment) * alignment
    tensors = {}
    for name, dims, kind, offset in infos:
        type_name, block_bytes, block_weights = GGML_TYPES[kind]
        n = int(np.prod(dims)) // block_weights * block_bytes
        tensors[name] = (type_name, dims, np.frombuffer(data, np.uint8, n, base + offset))
    return fields, tensors


def _weights(type_name: str, raw: np.ndarray) -> np.ndarray:
    """ggml's block layouts (ggml-common.h): Q4_1 blocks are fp16 d, fp16 m and 16 bytes holding 32 4-bit q (low
    nibbles are weights 0-15, high nibbles 16-31), weight = d q + m; Q8_0 blocks are fp16 d and 32 int8 q, weight
    = d q; F16 and F32 are the weights themselves. All as float32, in file order."""
    if type_name in ("F16", "F32"):
        return raw.view(np.float16 if type_name == "F16" else np.float32).astype(np.float32)
    blocks = raw.reshape(-1, GGML_TYPES[{"Q4_1": 3, "Q8_0": 8}[type_name]][1])
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    if type_name == "Q4_1":
        m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
        q = np.concatenate([blocks[:, 4:] & 0x0F, blocks[:, 4:] >> 4], axis=1).astype(np.float32)
        return (d * q + m).ravel()
    return (d * blocks[:, 2:].copy().view(np.int8).astype(np.float32)).ravel()


def test_the_f16_copy_holds_the_shipped_weights_and_metadata():
    """smollm2-135m runs as an F16 copy (assets.engine_gguf_path: llama.cpp's CPU GEMM kernels take F16, not
    Q4_1). Read here from the bytes, without gguf-py: every weight of the copy must be the shipped Q4_1/Q8_0 weight
    rounded to fp16 (exactly: the same IEEE operations), every metadata value byte for byte the same but the file
    type, and the teacher's cache key must name the copy, so annotations made with the Q4_1 file are never served
    for it."""
    from silverlabel import assets
    from silverlabel.teachers.llamacpp import resolve_gguf

    shipped, copy = assets.gguf_path("smollm2-135m"), assets.engine_gguf_path("smollm2-135m")  # the session's
    assert copy != shipped and copy.parent == assets.cache_dir() / "models"  # private cache (conftest.py)
    (fields_a, tensors_a), (fields_b, tensors_b) = _read_gguf(shipped), _read_gguf(copy)
    assert list(tensors_a) == list(tensors_b)
    kinds = {}
    for name, (kind, dims, raw) in tensors_a.items():
        kind_b, dims_b, raw_b = tensors_b[name]
        kinds[kind] = kinds.get(kind, 0) + 1
        assert dims_b == dims and kind_b == ("F32" if kind == "F32" else "F16"), name
        if kind == "F32":
            assert np.array_equal(raw, raw_b), name
        else:
            assert np.array_equal(_weights(kind_b, raw_b), _weights(kind, raw).astype(np.float16)), name
    assert kinds == {"Q4_1": 210, "Q8_0": 1, "F32": 61}  # the shipped file's types, all checked above
    file_type = fields_b.pop("general.file_type"), fields_a.pop("general.file_type")
    assert file_type == ((4, (1).to_bytes(4, "little")), (4, (3).to_bytes(4, "little")))  # MOSTLY_F16, MOSTLY_Q4_1
    assert fields_b == fields_a
    path, model_id = resolve_gguf("smollm2-135m")
    assert path == copy and model_id == f"smollm2-135m@{assets.GGUF_ASSETS['smollm2-135m'].sha256[:12]}/F16"
    made = copy.stat().st_mtime_ns
    assert assets.engine_gguf_path("smollm2-135m").stat().st_mtime_ns == made  # made once, then reused


def _write_gguf(path, fields: list[tuple[str, int, bytes]], tensors: list[tuple[str, int, tuple, bytes]],
                alignment: int) -> None:
    """A GGUF v3 file written here with struct (the layout _read_gguf reads): ``fields`` as (key, value type, the
    value's bytes), ``tensors`` as (name, ggml type, dims, data), each tensor's data at a multiple of
    ``alignment``."""
    import struct

    def string(text):
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(fields))
    head += b"".join(string(key) + struct.pack("<I", kind) + value for key, kind, value in fields)
    body, infos = b"", b""
    for name, kind, dims, data in tensors:
        body += b"\0" * (-len(body) % alignment)
        infos += string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, kind, len(body))
        body += data
    head += infos
    path.write_bytes(head + b"\0" * (-len(head) % alignment) + body)


def test_a_dequantized_copy_keeps_metadata_types_alignment_and_weights(tmp_path):
    """assets.dequantized_copy on a file unlike the shipped one, built here byte by byte: metadata of each of
    GGUF's 13 value types as a scalar, arrays of 8 of them (unsigned, 64-bit, float, bool and string elements,
    which gguf-py's writer would guess as int32, float32 or string were their element type not passed on), an
    alignment of 64 instead of the default 32, a Q8_0 weight and an F32 norm; as F16 and as F32."""
    import struct

    from silverlabel.assets import dequantized_copy

    def array(kind, fmt, values):
        return struct.pack(f"<IQ{len(values)}{fmt}", kind, len(values), *values)

    rng = np.random.default_rng(0)
    blocks = np.zeros((4, 34), np.uint8)  # Q8_0: fp16 scale, 32 int8 weights
    blocks[:, :2] = np.array([0.5, -0.25, 0.0123, 3.0], np.float16).view(np.uint8).reshape(4, 2)
    blocks[:, 2:] = rng.integers(-128, 128, (4, 32)).astype(np.int8).view(np.uint8)
    norm = rng.normal(size=8).astype(np.float32)
    fields = [("general.architecture", 8, struct.pack("<Q", 5) + b"llama"),
              ("general.alignment", 4, struct.pack("<I", 64)),
              ("general.file_type", 4, struct.pack("<I", 7)),  # MOSTLY_Q8_0
              ("test.u32s", 9, array(4, "I", [1, 2, 4_000_000_000])),
              ("test.i64s", 9, array(11, "q", [-(2 ** 40), 7])),
              ("test.f32s", 9, array(6, "f", [0.5, -1.25])),
              ("test.f64s", 9, array(12, "d", [1e-300, 2.5])),
              ("test.bools", 9, array(7, "?", [True, False])),
              ("test.u8s", 9, array(0, "B", [0, 255])),
              ("test.u64s", 9, array(10, "Q", [2 ** 64 - 1])),
              ("test.strings", 9, struct.pack("<IQ", 8, 2) + b"".join(struct.pack("<Q", len(t)) + t
                                                                      for t in (b"a", b"\xc3\xa9t\xc3\xa9"))),
              ("test.u8", 0, struct.pack("<B", 200)),
              ("test.i8", 1, struct.pack("<b", -5)),
              ("test.u16", 2, struct.pack("<H", 65535)),
              ("test.i16", 3, struct.pack("<h", -300)),
              ("test.i32", 5, struct.pack("<i", -70000)),
              ("test.f32", 6, struct.pack("<f", 0.1)),
              ("test.i64", 11, struct.pack("<q", -(2 ** 62))),
              ("test.u64", 10, struct.pack("<Q", 2 ** 63)),
              ("test.f64", 12, struct.pack("<d", math.pi)),
              ("test.flag", 7, struct.pack("<?", True))]
    source = tmp_path / "tiny.gguf"
    _write_gguf(source, fields, [("w", 8, (64, 2), blocks.tobytes()), ("n", 0, (8,), norm.tobytes())], alignment=64)
    fields_a, tensors_a = _read_gguf(source)  # the reader reads what was written, before the copy is judged by it
    assert fields_a == {key: (kind, value) for key, kind, value in fields} and tensors_a["w"][0] == "Q8_0"
    for engine_type, code, dtype in (("F16", 1, np.float16), ("F32", 0, np.float32)):
        target = tmp_path / f"tiny-{engine_type}.gguf"
        dequantized_copy(source, target, engine_type)
        fields_b, tensors_b = _read_gguf(target)
        assert fields_b.pop("general.file_type") == (4, struct.pack("<I", code))
        assert fields_b == {key: (kind, value) for key, kind, value in fields if key != "general.file_type"}
        kind, dims, raw = tensors_b["w"]
        assert (kind, dims) == (engine_type, (64, 2))
        assert np.array_equal(_weights(kind, raw), _weights("Q8_0", tensors_a["w"][2]).astype(dtype))
        # read at the 64-byte boundaries the header promises (_read_gguf places the data by general.alignment)
        assert tensors_b["n"][:2] == ("F32", (8,)) and np.array_equal(tensors_b["n"][2].view(np.float32), norm)


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
    from filelock import FileLock

    with FileLock(str(target) + ".lock"):  # a made copy is read without the lock (e.g. while a writer holds it)
        reader = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert reader.returncode == 0 and reader.stdout.strip() == str(target)
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
