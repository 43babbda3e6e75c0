"""llama-cpp-python's compile as the README's commands run it (without llama.cpp's common library, through
scripts/llama_cpp_lean_build.cmake) and as plain ``LLAVA_BUILD=OFF``, side by side: the same sdist, one build
after the other, no pip cache. Reports each build's seconds, their ratio, which shared libraries each wheel holds,
and whether the libraries both have (libllama, ggml) carry the same machine code: the sha256 of each one's
``.text`` section (the files themselves differ in the build paths they record).

    python bench/llama_cpp_build.py [--version 0.3.36]      (about 5 minutes on 2 cores; needs pip, objcopy)
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


def build(version: str, cmake_args: str, out: Path) -> float:
    out.mkdir(parents=True)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir", "--no-binary", ":all:",
                    f"llama-cpp-python=={version}", "-w", str(out)], check=True,
                   env={**os.environ, "CMAKE_ARGS": cmake_args})
    return time.monotonic() - start


def text_hashes(folder: Path) -> dict:
    """The wheel's shared libraries, and the .text section's sha256 of each one the Python package loads
    (llama_cpp/lib)."""
    (wheel,) = folder.glob("*.whl")
    hashes = {}
    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        for name in z.namelist():
            if name.startswith("llama_cpp/lib/") and ".so" in name:
                path = Path(z.extract(name, tmp))
                text = subprocess.run(["objcopy", "-O", "binary", "--only-section=.text", str(path), "/dev/stdout"],
                                      capture_output=True, check=True).stdout
                hashes[Path(name).name] = hashlib.sha256(text).hexdigest()[:16]
        libs = sorted(Path(n).name for n in z.namelist() if ".so" in n)
    return {"libraries": libs, "text_sha256": hashes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="0.3.36")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        readme = build(args.version, f"-DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE={INCLUDE}", Path(tmp, "a"))
        plain = build(args.version, "-DLLAVA_BUILD=OFF", Path(tmp, "b"))
        a, b = text_hashes(Path(tmp, "a")), text_hashes(Path(tmp, "b"))
    shared = sorted(set(a["text_sha256"]) & set(b["text_sha256"]))
    print(json.dumps({
        "without_common_s": round(readme, 1), "plain_s": round(plain, 1), "speedup": round(plain / readme, 2),
        "only_in_plain": sorted(set(b["libraries"]) - set(a["libraries"])),
        "same_machine_code": {n: a["text_sha256"][n] == b["text_sha256"][n] for n in shared},
    }))


if __name__ == "__main__":
    main()
