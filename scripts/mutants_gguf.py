"""By-hand mutants of the GGUF handling (docs/testing.md, "The F16 copy"): llama.cpp's F16 copy and the hf
teacher's one read of a GGUF, each applied to a copy of src/ in a
scratch folder and run against the tests that claim to cover it, with PYTHONPATH pointing at the copy so the tests'
subprocesses import the mutated code too (mutmut's trampolines do not reach them).

Usage: python scripts/mutants_gguf.py [INDEX ...]   (about 4 minutes for all 21 on 2 cores)
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LLAMACPP_TESTS = "tests/integration/test_llamacpp_teacher.py::"
F16 = LLAMACPP_TESTS + "test_the_f16_copy_holds_the_shipped_weights_and_metadata"
CONCURRENT = LLAMACPP_TESTS + "test_a_killed_conversion_leaves_nothing_and_concurrent_ones_share_one_file"
TINY = LLAMACPP_TESTS + "test_a_dequantized_copy_keeps_metadata_types_alignment_and_weights"
URI = "tests/integration/test_hf_teacher.py::test_uri_forms_and_errors"
THREADS = "tests/integration/test_hf_teacher.py::test_a_gguf_is_read_once_per_load_and_threads_take_turns"
RUNS_AS = "tests/integration/test_crash_resume.py::test_two_fresh_runs_are_identical"
ASSETS, LLAMACPP, HF = "silverlabel/assets.py", "silverlabel/teachers/llamacpp.py", "silverlabel/teachers/hf_causal.py"
DTYPES = 'dtype = {"F16": np.float16, "F32": np.float32}[engine_type]'
ADD_WEIGHTS = "writer.add_tensor(tensor.name, weights.astype(dtype))"
ADD_NORM = "writer.add_tensor(tensor.name, np.asarray(tensor.data))"
ALIGN = "writer.add_custom_alignment(int(value))"
COPY_NAME = 'f"{name}-{asset.sha256[:12]}-{asset.engine_type.lower()}.gguf"'
CACHE_ID = 'return f"{self.name}@{self.sha256[:12]}"'

# (what the mutant does, file under src/, text replaced, replacement, tests that must fail)
MUTANTS = [
    ("weights scaled by 1.001", ASSETS, ADD_WEIGHTS, ADD_WEIGHTS.replace("weights.", "(weights * 1.001)."), [F16]),
    ("F16 written as F32", ASSETS, DTYPES, "dtype = np.float32", [F16]),
    ("norms (F32) cast to the engine type", ASSETS, ADD_NORM, ADD_NORM[:-1] + ".astype(dtype))", [F16]),
    ("file type left as shipped", ASSETS, "value = int(gguf.LlamaFileType.MOSTLY_F16 if",
     "value = value if True else int(gguf.LlamaFileType.MOSTLY_F16 if", [F16]),
    ("file type F32 for F16", ASSETS, 'gguf.LlamaFileType.MOSTLY_F16 if engine_type == "F16"',
     'gguf.LlamaFileType.ALL_F32 if engine_type == "F16"', [F16]),
    ("tokenizer metadata dropped", ASSETS, 'field.name.startswith("GGUF.")',
     'field.name.startswith(("GGUF.", "tokenizer.ggml.merges"))', [F16]),
    ("array element types left to gguf-py's guess", ASSETS, "sub_type=sub_type)", "sub_type=None)", [F16, TINY]),
    ("copy not keyed by type", ASSETS, COPY_NAME, 'f"{name}-{asset.sha256[:12]}.gguf"', [F16, CONCURRENT]),
    ("engine type ignored (the shipped file runs)", ASSETS, "    if not asset.engine_type:\n        return source\n",
     "    if True:\n        return source\n", [F16]),
    ("stale temporary file left", ASSETS, "        remove_stale_temp(target.parent, of=target.name)\n", "",
     [CONCURRENT]),
    ("no lock", ASSETS, '    with FileLock(str(target) + ".lock"):', "    with contextlib.nullcontext():",
     [CONCURRENT]),
    ("unlocked 'already made' check removed", ASSETS, "    if target.exists():  # made before",
     "    if False:  # made before", [F16, CONCURRENT]),
    ("id without the engine type", LLAMACPP, "asset.cache_id + engine", "asset.cache_id", [F16, RUNS_AS]),
    ("cache_id 16 digits", ASSETS, CACHE_ID, CACHE_ID.replace("[:12]", "[:16]"), [F16, URI]),
    ("hf keeps no id", HF, '"id": GGUF_ASSETS[model].cache_id}', '"id": None}', [URI]),
    ("alignment key dropped", ASSETS, ALIGN, "pass", [F16, TINY]),
    ("alignment halved", ASSETS, ALIGN, ALIGN.replace("int(value)", "int(value) // 2"), [F16, TINY]),
    ("F32 copy written as F16", ASSETS, DTYPES, "dtype = np.float16", [F16, TINY]),
    ("hf loads in threads without turns", HF, "    with _GGUF_PATCH:", "    with contextlib.nullcontext():", [THREADS]),
    ("hf leaves gguf patched", HF, "            gguf.get_tensor_name_map, gguf.GGUFReader = name_map, reader\n",
     "            pass\n", [THREADS]),
    ("hf reader not cached", HF, "gguf.GGUFReader = functools.lru_cache(maxsize=None)(reader)",
     "gguf.GGUFReader = functools.lru_cache(maxsize=0)(reader)", [THREADS]),
]


def main(only: list[str]) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="silverlabel-mutants-"))
    survived = 0
    try:
        for i, (name, path, old, new, tests) in enumerate(MUTANTS):
            if only and str(i) not in only:
                continue
            root = scratch / f"m{i}"
            shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
            file = root / "src" / path
            text = file.read_text()
            assert text.count(old) == 1, f"mutant {i} ({name}): the text to replace is not in {path} exactly once"
            text = text.replace(old, new)
            if "contextlib." in new and "import contextlib" not in text:
                text = text.replace("\nimport ", "\nimport contextlib\nimport ", 1)
            file.write_text(text)
            env = {**os.environ, "PYTHONPATH": str(root / "src"), "CI": "true"}
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                                  cwd=REPO, env=env, capture_output=True, text=True)
            last = ([line for line in done.stdout.splitlines() if line.strip()] or [done.stderr.strip()[-200:]])[-1]
            survived += done.returncode == 0
            print(f"{i:2d} {'SURVIVED' if done.returncode == 0 else 'killed'}  {name}: {last}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
