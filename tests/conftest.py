"""Shared test setup: offline, quiet, and a private cache folder so tests never touch the user's cache."""

import functools
import os

import pytest

os.environ.setdefault("SILVERLABEL_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SILVERLABEL_QUIET", "1")


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


def pytest_collection_modifyitems(config, items):
    """Tests that need the vLLM server run last, so the session's one server starts as late as possible and is
    torn down at once (it holds ~1.5 GB). Its engine runs in the server's process (tests/vllm_server.py
    ``server_env``): idle, it takes 0.03 of the machine's CPU against 0.13 for vLLM's default engine process
    (bench/vllm_cpu_engine.py), which took that from everything running beside it. Stable: every other test keeps
    its order."""
    items.sort(key=lambda item: "vllm" in getattr(item, "fixturenames", ()) or
               item.get_closest_marker("uses_vllm") is not None)


@pytest.fixture
def cli(monkeypatch):
    """A command through the console script's entry point in this process (``tests.helpers.cli_in_process``):
    what `silverlabel` runs, without a fresh interpreter's ~2.5 s of imports per call. Tests that need the real
    process (kills, progress lines on stderr, the first error) start a subprocess themselves."""
    from tests.helpers import cli_in_process

    return functools.partial(cli_in_process, monkeypatch)
