"""Shared test setup: offline, quiet, and a private cache folder so tests never touch the user's cache."""

import functools
import os
import secrets
import sys

import pytest

os.environ.setdefault("SILVERLABEL_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SILVERLABEL_QUIET", "1")
# The suite starts a few hundred Python processes (the CLI in subprocesses, xdist and Ray workers, llama-cpp-python's
# server), each importing torch, transformers and silverlabel. Where PYTHONDONTWRITEBYTECODE is set (container
# images often set it) in a venv pip installed with --no-compile, each of them compiled those ~5,000 modules again:
# 6.6 s against 2.8 s on one core (docs/testing.md). The tests let Python keep bytecode, as it does by default;
# the first process to import a module writes it (atomically: concurrent writers are safe).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
# One Ray token for the session, in the environment every Ray here reads: the test clusters (ray_cluster below) and
# any Ray the product starts itself. Ray caches the token a process first used: with a token per cluster, a test
# that started a Ray of its own in a worker that had joined a cluster before failed ("InvalidAuthToken").
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


def pytest_configure(config):
    """Under pytest-xdist, each worker runs on its own share of the cores (on 2 cores: one each), and so does every
    process it starts (affinity is inherited). Every thread pool here sizes itself from the affinity: OpenMP's
    (torch, vLLM's ``VLLM_CPU_OMP_THREADS_BIND`` from ``tests.vllm_server.cpu_list``), llama.cpp's
    (``silverlabel.devices.usable_cpus``, the servers' ``-t``). Unpinned, two workers each ran 2-thread pools on
    the 2 cores and the suite was slower than one worker (docs/testing.md). Runs before any test module imports
    torch, whose OpenMP reads the affinity once, at load."""
    worker = getattr(config, "workerinput", None)
    if worker is None:
        numprocesses = config.getoption("numprocesses", None)
        if numprocesses and (config.getoption("dist") != "loadgroup" or config.getoption("loadscopereorder")):
            raise pytest.UsageError("run the tests on several workers with --dist loadgroup --no-loadscope-reorder "
                                    "(the README's command): any other distribution starts the vLLM server on "
                                    "every worker (tests/conftest.py)")
        return
    if not hasattr(os, "sched_setaffinity"):
        return
    cores, n = sorted(os.sched_getaffinity(0)), int(worker["workercount"])
    try:  # a worker xdist starts again after a crash gets a new id (gw2 of 2): it takes the core of its number mod n
        i = int(worker["workerid"].removeprefix("gw")) % n
    except ValueError:  # a custom --tx id: leave it unpinned
        return
    os.sched_setaffinity(0, cores[i::n] if len(cores) >= n else [cores[i % len(cores)]])


@pytest.fixture(autouse=True, scope="session")
def _llama_cpp_guard():
    """The tests' own llama_cpp.Llama objects (references, the contract test) get the AMX guard the product's
    teacher applies (silverlabel.teachers.llamacpp.avoid_amx_buffers); without it they segfault on AMX CPUs."""
    if has_module("llama_cpp"):
        import llama_cpp

        from silverlabel.teachers.llamacpp import avoid_amx_buffers

        avoid_amx_buffers(llama_cpp)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    old = os.environ.get("SILVERLABEL_CACHE")
    os.environ["SILVERLABEL_CACHE"] = str(tmp_path_factory.mktemp("silverlabel-cache"))
    yield
    if old is None:
        os.environ.pop("SILVERLABEL_CACHE", None)
    else:
        os.environ["SILVERLABEL_CACHE"] = old


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# Session fixtures too costly to start on two workers: under pytest-xdist every file that uses one is one unit of
# work (`--dist loadgroup`), so each is started once, as without xdist. A test that takes one through
# request.getfixturevalue (which fixturenames does not show) names it with the uses_server mark, and so do the
# files using llama-cpp-python's `server` fixture: toy servers' module fixtures share that name.
SHARED_SERVERS = ("vllm", "hf_smol", "llama_cpp_server")


def _servers(item) -> set[str]:
    named = {name for mark in item.iter_markers("uses_server") for name in mark.args}
    return named | {name for name in SHARED_SERVERS if name in getattr(item, "fixturenames", ())}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks into the node ids
def pytest_collection_modifyitems(config, items):
    """Without xdist, the tests that need the vLLM server run last, so the session's one server starts as late as
    possible and is torn down at once (it holds ~1.5 GB).

    Under xdist (``-n 2 --dist loadgroup --no-loadscope-reorder``, the README's test command) each test file is
    one unit of work, so a module's fixtures (a study several tests read) are built once; files that share a
    costly session server (``SHARED_SERVERS``) form one unit, and that unit goes first: it is the longest and
    cannot be split, so the other worker fills the time beside it with the rest (xdist hands out units in this
    order when told not to reorder them; pytest_configure refuses other modes). On 2 cores the vLLM server then
    stays up beside the other worker's tests after its unit, idle at 0.03 of the machine's CPU. Stable: every
    other test keeps its order."""
    if not hasattr(config, "workerinput"):
        items.sort(key=lambda item: "vllm" in _servers(item))
        return
    file = {item: item.nodeid.split("::")[0] for item in items}
    servers: dict[str, set[str]] = {}
    for item in items:
        servers.setdefault(file[item], set()).update(_servers(item))
    for item in items:
        item.add_marker(pytest.mark.xdist_group("servers" if servers[file[item]] else file[item]))
    items.sort(key=lambda item: not servers[file[item]])


@pytest.fixture
def ray_cluster():
    """A real local Ray cluster (tests.ray_cluster.RayHead) that the product joins as it joins a user's: the test
    passes its address (``--ray-address``), and its token is the session's (above), which subprocesses inherit.
    One per test: a cluster shared by the Ray tests was tried and cost as much as it saved (docs/testing.md)."""
    # imported here, as in `cli` below: conftest is read before pytest_configure pins the worker's core, and
    # tests.helpers imports silverlabel
    from tests.helpers import require
    from tests.ray_cluster import start_head, stop_head

    require("ray", "pip install 'silverlabel[ray]'")
    head = start_head()
    yield head
    stop_head(head)


@pytest.fixture
def cli(monkeypatch):
    """A command through the console script's entry point in this process (``tests.helpers.cli_in_process``):
    what `silverlabel` runs, without a fresh interpreter's ~2.5 s of imports per call. Tests that need the real
    process (kills, progress lines on stderr, the first error) start a subprocess themselves."""
    from tests.helpers import cli_in_process

    return functools.partial(cli_in_process, monkeypatch)
