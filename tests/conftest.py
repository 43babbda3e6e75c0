"""Shared test setup: offline, quiet, and a private cache folder so tests never touch the user's cache."""

import os

import pytest

os.environ.setdefault("SILVERLABEL_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SILVERLABEL_QUIET", "1")


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
