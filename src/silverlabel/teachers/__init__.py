"""Teacher LLMs behind one interface, chosen by a URI such as ``llamacpp:qwen2.5-0.5b``.

Backends register themselves with :func:`register_teacher`; their SDKs are imported only when used, so a
missing optional dependency is an error with the ``pip install`` line, not an import failure of silverlabel.
"""

from __future__ import annotations

import importlib

from ..errors import SilverlabelError
from .base import (
    TEACHERS,
    Annotations,
    AnnotationSummary,
    Scored,
    Teacher,
    redact_uri,
    register_teacher,
)
from .prompts import PAPER_TEMPLATE, Demonstrations, Prompt, sample_demonstrations

_BACKEND_MODULES = {"llamacpp": ".llamacpp", "hf": ".hf_causal", "openai": ".openai_server"}


def parse_teacher_uri(uri: str) -> tuple[str, str]:
    backend, sep, model = uri.partition(":")
    if not sep or not model:
        raise SilverlabelError(
            f"teacher '{uri}' is not BACKEND:MODEL; e.g. llamacpp:qwen2.5-0.5b or llamacpp:/path/model.gguf "
            f"(backends: {', '.join(_BACKEND_MODULES)})")
    if backend not in _BACKEND_MODULES:
        raise SilverlabelError(f"teacher backend '{backend}' is unknown; choose one of {', '.join(_BACKEND_MODULES)}")
    return backend, model


def get_teacher(uri: str, **options) -> Teacher:
    """Build the teacher a URI names; options go to the backend (e.g. ``chat=False`` for the raw prompt)."""
    backend, model = parse_teacher_uri(uri)
    importlib.import_module(_BACKEND_MODULES[backend], __name__)
    return TEACHERS[backend](model, **options)


__all__ = [
    "PAPER_TEMPLATE",
    "TEACHERS",
    "AnnotationSummary",
    "Annotations",
    "Demonstrations",
    "Prompt",
    "Scored",
    "Teacher",
    "get_teacher",
    "redact_uri",
    "parse_teacher_uri",
    "register_teacher",
    "sample_demonstrations",
]
