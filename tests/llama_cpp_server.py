"""llama.cpp's C++ ``llama-server`` on 127.0.0.1 serving the shipped SmolLM2-135M GGUF (the same Q4_1 file the
llamacpp teacher reads), for the contract test and the server tests.

The binary is built once by ``scripts/setup_llama_server.sh`` from the llama.cpp sources that llama-cpp-python's
sdist vendors, and linked as ``.llama-server`` in the repository root. Started once per test session (the
``llama_cpp_server`` fixture in tests/integration/conftest.py); absent, the tests that need it skip with the build
line locally and fail in CI (CI=true), like the vLLM tests.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path

from silverlabel.devices import usable_cpus
from tests.vllm_server import REPO, free_port, in_ci, stop, wait_ready

BINARY = REPO / ".llama-server"
SETUP = "bash scripts/setup_llama_server.sh"
SERVED = "smol"


def require_llama_server() -> Path:
    import pytest

    if not BINARY.exists():
        message = f"llama-server is not built ({BINARY} is missing; run: {SETUP})"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return BINARY


def server_command(binary: Path, model: Path, port: int) -> list[str]:
    # one slot and continuous batching off: requests are answered one at a time, as their log-probabilities are
    # read (the tests compare numbers, not throughput); --jinja reads the GGUF's own chat template
    return [str(binary), "-m", str(model), "--alias", SERVED, "--host", "127.0.0.1", "--port", str(port),
            "-c", "2048", "-t", str(usable_cpus()), "-np", "1", "--jinja", "--no-webui", "--seed", "0"] + NO_AMX


# the binary is built for this CPU (GGML_NATIVE); on an AMX CPU its AMX weight buffers segfault on the first
# decode, and --no-repack turns them off, as silverlabel's llamacpp teacher does in process (avoid_amx_buffers)
NO_AMX = ["--no-repack"] if " amx_int8" in Path("/proc/cpuinfo").read_text() else []


@contextmanager
def llama_cpp_server(log_dir: Path):
    """The server on a free port; yields its base URL (without /v1) once /v1/models answers; killed on exit."""
    from silverlabel.assets import engine_gguf_path

    binary = require_llama_server()
    port = free_port()
    log_file = Path(log_dir) / "llama-server.log"
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(server_command(binary, engine_gguf_path("smollm2-135m"), port), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, log_file, timeout=120, name="llama-server")
        yield url
    finally:
        stop(proc)
