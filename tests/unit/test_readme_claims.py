"""Claims the README makes about inputs, checked on real files (the claims about a study's outputs are checked on
a real study in tests/integration/test_study_claims.py)."""

import gzip
import shutil

import pandas as pd
import pytest

from silverlabel.data import load_dataset
from silverlabel.errors import SilverlabelError


def test_gzipped_parquet_loads_like_the_plain_file(tmp_path):
    """README, Data: "Parquet (optionally gzipped)"."""
    frame = pd.DataFrame({"tweet": [f"tweet {i}: {'fine' if i % 3 else 'awful'} day" for i in range(30)],
                          "stance": ["pro", "anti", "none"] * 10, "id": [f"t{i:02d}" for i in range(30)]})
    plain = tmp_path / "d.parquet"
    frame.to_parquet(plain, index=False)
    packed = tmp_path / "d.parquet.gz"
    with open(plain, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert packed.read_bytes()[:2] == b"\x1f\x8b"  # really gzip, not Parquet bytes under a .gz name
    a = load_dataset(str(plain), text_column="tweet", label_column="stance", id_column="id")
    b = load_dataset(str(packed), text_column="tweet", label_column="stance", id_column="id")
    assert b.texts == frame["tweet"].tolist() and b.items == frame["id"].tolist()
    assert [b.label_names[i] for i in b.labels] == frame["stance"].tolist()
    assert (a.texts, a.items, a.label_names, list(a.labels)) == (b.texts, b.items, b.label_names, list(b.labels))
    broken = tmp_path / "broken.parquet.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(SilverlabelError, match=r"broken\.parquet\.gz: cannot be read as parquet"):
        load_dataset(str(broken), text_column="tweet", label_column="stance")


def test_ci_runs_exactly_the_readmes_second_command_and_the_first_installs_no_test_servers():
    """README: "`.ci/run` runs exactly this"; the first command installs only what the demo needs."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    blocks = re.findall(r"```bash\n(.*?)\n```", (root / "README.md").read_text(), flags=re.S)
    first, second = blocks[0].strip(), blocks[1].strip()
    ci = [line for line in (root / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(ci) == 1
    # -q and --durations change what pip and pytest print, not what they install or run
    assert re.sub(r" -q\b| --durations=\d+", "", ci[0]) == second
    assert first.endswith("silverlabel demo")
    assert second.endswith('python -m pytest -m "not slow or ci" -n 2 --dist loadgroup --no-loadscope-reorder')
    for test_only in ("setup_vllm", "setup_llama_server", "setup_chromium", "test]", "pytest"):
        assert test_only not in first and test_only in second
    # both compile llama-cpp-python without llama.cpp's common library and with libllama's host code at -O1
    # (scripts/llama_cpp_lean_build.cmake; that it compiles, a first install with no pip cache shows: README command 1
    # in scripts/time_first_command.sh, bench/llama_cpp_build.py; a warm pip cache reuses its wheel)
    include = "-DCMAKE_PROJECT_llama.cpp_INCLUDE=$PWD/scripts/llama_cpp_lean_build.cmake"
    assert include in first and include in second
    lean = (root / "scripts" / "llama_cpp_lean_build.cmake").read_text()
    assert "set(LLAMA_BUILD_COMMON OFF)" in lean
    assert "cmake_language(DEFER CALL target_compile_options llama PRIVATE" in lean
    assert "$<$<AND:$<CONFIG:Release,RelWithDebInfo>,$<COMPILE_LANGUAGE:CXX>>:-O1>" in lean
