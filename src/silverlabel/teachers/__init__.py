"""Teacher LLMs behind one interface, chosen by a URI such as ``llamacpp:qwen2.5-0.5b``.

Backends register themselves with :func:`register_teacher`; their SDKs are imported only when used, so a
missing optional dependency is an error with the ``pip install`` line, not an import failure of silverlabel.
"""

from __future__ import annotations

import importlib.metadata

from ..errors import SilverlabelError
from . import (  # noqa: F401  (each registers itself; SDKs load on use)
    anthropic_api,
    chat_api,
    hf_causal,
    llamacpp,
    openai_server,
    table,
    vllm_engine,
)
from .base import (
    TEACHER_OPTIONS,
    TEACHERS,
    Annotations,
    AnnotationSummary,
    Scored,
    Teacher,
    TeacherOptions,
    redact_uri,
    register_teacher,
    validate_options,
)
from .prompts import PAPER_TEMPLATE, Demonstrations, Prompt, sample_demonstrations

ENTRY_POINTS = "silverlabel.teachers"  # third-party packages register backends here (module or object)
_loaded_entry_points = False


def _load_entry_points() -> None:
    """Import the backends other packages declare under the ``silverlabel.teachers`` entry-point group; importing
    them runs their ``@register_teacher``. Done once, the first time an unregistered backend name is looked up."""
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINTS):
        try:
            ep.load()
        except ImportError as exc:
            raise SilverlabelError(f"teacher plug-in '{ep.name}' ({ep.value}) cannot be imported: {exc}") from None


def parse_teacher_uri(uri: str) -> tuple[str, str]:
    backend, sep, model = uri.partition(":")
    if backend not in TEACHERS:
        _load_entry_points()
    if not sep or not model:
        raise SilverlabelError(
            f"teacher '{uri}' is not BACKEND:MODEL; e.g. llamacpp:qwen2.5-0.5b or llamacpp:/path/model.gguf "
            f"(backends: {', '.join(sorted(TEACHERS))})")
    if backend not in TEACHERS:
        raise SilverlabelError(f"teacher backend '{backend}' is unknown; choose one of {', '.join(sorted(TEACHERS))}")
    return backend, model


def get_teacher(uri: str, **options) -> Teacher:
    """Build the teacher a URI names, through the registry; options go to the backend after its registered options
    model checked them (e.g. ``chat=False`` for the raw prompt, ``concurrency=16`` for a server)."""
    backend, model = parse_teacher_uri(uri)
    chat = options.pop("chat", None)
    options = validate_options(backend, options)
    if chat is not None:
        options["chat"] = chat
    return TEACHERS[backend](model, **options)


__all__ = [
    "PAPER_TEMPLATE",
    "TEACHERS",
    "TEACHER_OPTIONS",
    "AnnotationSummary",
    "Annotations",
    "Demonstrations",
    "Prompt",
    "Scored",
    "Teacher",
    "TeacherOptions",
    "get_teacher",
    "parse_teacher_uri",
    "redact_uri",
    "register_teacher",
    "sample_demonstrations",
    "validate_options",
]
