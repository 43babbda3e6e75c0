"""A real local Ray cluster for a test (``ray start --head``, Ray's own command) that the product joins as it joins
a user's cluster: through ``--ray-address`` (the ``address`` executor option), with the cluster's token in the
environment. What it adds to a ``ray.init()`` the product starts itself: the path a user with a cluster takes, and
a check that the run really joined it (``RayHead.drivers``, from the GCS server's log).

Ray binds its GCS and raylet ports on every interface whatever ``--node-ip-address`` says (it resolves 127.0.0.1
to the machine's address), so the cluster demands the session's token (Ray's token authentication, set in
tests/conftest.py): nothing without it can join. Every port is a free one, so two pytest processes never meet on
Ray's defaults."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.vllm_server import free_ports

NUM_CPUS = 2  # the tests ask for two workers; on a 1-core pytest worker Ray still schedules two one-CPU actors


@dataclass
class RayHead:
    address: str
    pgid: int
    folder: Path

    def drivers(self) -> list[int]:
        """The process ids of the drivers that joined, in order, from the GCS server's log: a run given the
        address that started a Ray of its own instead would not be here."""
        log = next(self.folder.glob("session_*/logs/gcs_server.out"), None)
        text = log.read_text(errors="replace") if log else ""
        return [int(pid) for pid in re.findall(r"Registering job\. job_id=\w+ driver_pid=(\d+)", text)]


def start_head() -> RayHead:
    if os.environ.get("RAY_AUTH_MODE") != "token" or not os.environ.get("RAY_AUTH_TOKEN"):
        raise RuntimeError("set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN first (tests/conftest.py does)")
    # a short folder: Ray's unix sockets live under it and a socket path has at most 107 characters
    folder = Path(tempfile.mkdtemp(prefix="slray", dir="/tmp"))
    flags = ("--dashboard-port", "--dashboard-agent-listen-port", "--metrics-export-port", "--runtime-env-agent-port",
             "--dashboard-agent-grpc-port")
    port, *others = free_ports(1 + len(flags))  # distinct: Ray refuses one port for two of its components
    ports = {flag: str(p) for flag, p in zip(flags, others)}
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [ray, "start", "--head", "--port", str(port), "--num-cpus", str(NUM_CPUS), "--include-dashboard", "false",
           "--disable-usage-stats", "--temp-dir", str(folder), *[x for kv in ports.items() for x in kv]]
    # a new session, so the group is `ray start`'s pid: the daemons it leaves behind keep that group, and stop_head
    # kills exactly this cluster (`ray stop` would kill every Ray on the machine); the workers the raylet starts
    # have groups of their own and exit with their job or their raylet
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    head = RayHead(address=f"127.0.0.1:{port}", pgid=proc.pid, folder=folder)
    _, err = proc.communicate(timeout=180)
    if proc.returncode != 0:
        stop_head(head)
        raise RuntimeError(f"ray start failed ({proc.returncode}): {err[-3000:]}")
    return head


def _members(pgid: int) -> list[int]:
    """The live processes of the group (a zombie is dead: nothing may reap it in a container without an init)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(pid))
    return found


def stop_head(head: RayHead) -> None:
    """SIGKILL at once: a test cluster keeps nothing worth a clean shutdown, and after SIGTERM the group took
    ~10 s to go."""
    try:
        os.killpg(head.pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while _members(head.pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    shutil.rmtree(head.folder, ignore_errors=True)
