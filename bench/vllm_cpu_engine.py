"""vLLM's CPU server two ways, side by side in one run: its defaults, and the settings the tests start it with.

(a) default - vLLM's automatic OpenMP binding, which reserves one core for the engine core's process;
(b) tests   - ``tests/vllm_server.py``'s ``server_env``: ``VLLM_CPU_OMP_THREADS_BIND`` = every core this process
              may use, and (since 4 December 2026) ``VLLM_ENABLE_V1_MULTIPROCESSING=0``, which with the command's
              ``--distributed-executor-backend uni`` runs the model in the engine core's process instead of a
              third one; unset for (a), where vLLM's CPU platform turns ``uni`` back into its multiprocess
              executor. The engine core is a child process of the API server either way.

(On 3 December 2026, (b) set ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` without ``uni``, which changes nothing for the
server, so the numbers measured then are the binding's alone.)

Both serve the shipped SmolLM2-135M as float32 weights with the tests' flags (``--enforce-eager``, block size 32).
Measured for each: seconds until ``/v1/models`` answers, milliseconds per generated token for one request at a
time (16 tokens, ``ignore_eos``, the best of 5 after one warm-up), seconds per request with 1 and 4 requests in
flight (16 requests of 16 tokens), and the share of the machine's CPU busy over 5 s while the server idles. The
servers run one after the other, default first, then tests, then default again, so a drift in the machine's speed
does not favour either; the two default runs are averaged. Prints one JSON line with the ratios.

    python bench/vllm_cpu_engine.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import vllm_server  # noqa: E402  (the tests' own start command and environment)

DEFAULT_KEYS = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_OMP_THREADS_BIND")  # unset for (a), whoever set them


def _busy(seconds: float = 5.0) -> float:
    def read():
        return [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    a = read()
    time.sleep(seconds)
    d = [y - x for x, y in zip(a, read())]
    return 1 - (d[3] + d[4]) / sum(d)


def measure(tests_env: bool) -> dict:
    env = vllm_server.server_env()
    if not tests_env:
        for k in DEFAULT_KEYS:
            env.pop(k, None)
    started = time.monotonic()
    with vllm_server.vllm_server(Path(tempfile.mkdtemp()), env=env) as url:
        ready = time.monotonic() - started
        client = httpx.Client(timeout=300)
        body = {"model": vllm_server.SERVED, "max_tokens": 16, "temperature": 0, "ignore_eos": True}

        def one(i: int) -> None:
            r = client.post(url + "/v1/completions", json={**body, "prompt": f"Story {i}: once upon a time"})
            r.raise_for_status()

        one(-1)
        singles = []
        for i in range(5):
            t = time.monotonic()
            one(i)
            singles.append(time.monotonic() - t)
        per_request = {}
        for inflight in (1, 4):
            t = time.monotonic()
            with ThreadPoolExecutor(inflight) as pool:
                list(pool.map(one, range(100, 116)))
            per_request[inflight] = (time.monotonic() - t) / 16
        idle = _busy()
    return {"ready_s": ready, "ms_per_token": 1000 * min(singles) / 16, "s_per_request_1": per_request[1],
            "s_per_request_4": per_request[4], "idle_busy": idle}


def main() -> None:
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    first, tests, second = measure(False), measure(True), measure(False)
    default = {k: (first[k] + second[k]) / 2 for k in first}
    out = {"default": {k: round(v, 3) for k, v in default.items()},
           "tests": {k: round(v, 3) for k, v in tests.items()},
           "ratio_default_over_tests": {k: round(default[k] / tests[k], 2) for k in default if tests[k] > 0},
           "default_runs_ms_per_token": [round(first["ms_per_token"], 1), round(second["ms_per_token"], 1)],
           "loadavg_before": load_before, "loadavg_after": Path("/proc/loadavg").read_text().split()[:3]}
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
