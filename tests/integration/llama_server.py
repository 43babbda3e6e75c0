"""A real ``python -m llama_cpp.server`` on 127.0.0.1 serving the shipped SmolLM2-135M, for the teacher tests
(the ``server`` fixture in conftest.py starts it)."""

import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager

import pytest

from silverlabel.devices import usable_cpus
from tests.helpers import require
from tests.vllm_server import free_port

CANARY = f"sk-canary-{uuid.uuid4().hex}"  # the server demands it, so every request must carry it
TEMPLATE = "smollm2-135m"  # llama-cpp-python's server does not expose its chat template; read it from the GGUF


@contextmanager
def llama_server(log_dir):
    """The server on a free port, requiring the canary key; yields its URL, killed on exit."""
    require("httpx", "pip install 'silverlabel[openai]'")
    for module in ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        require(module, "pip install 'silverlabel[test]'")
    from silverlabel.assets import engine_gguf_path

    port = free_port()
    log_file = log_dir / "server.log"
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            # llama_cpp.server's own entry point, run after silverlabel's AMX guard (teachers/llamacpp.py): on an
            # AMX CPU the unguarded server segfaults on its first request
            [sys.executable, "-c", "import llama_cpp, runpy; from silverlabel.teachers.llamacpp import "
             "avoid_amx_buffers; avoid_amx_buffers(llama_cpp); runpy.run_module('llama_cpp.server', "
             "run_name='__main__')", "--model", str(engine_gguf_path("smollm2-135m")),
             "--model_alias", "smol", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024",
             "--n_threads", str(usable_cpus()), "--api_key", CANARY], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({proc.returncode}): {log_file.read_text()[-2000:]}")
            try:
                request = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {CANARY}"})
                with urllib.request.urlopen(request, timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready after 60 s: {log_file.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
