"""``table:PATH``: a teacher whose labels were made before, read from a table instead of asking a model.

The table is a ``silverlabel annotate`` output, or any CSV/JSONL/Parquet with a ``text`` and a ``label`` column
and, optionally, ``p:<label>`` columns (the teacher's P_S; without them a label counts as certain). It lets a
study, and ``silverlabel train --annotations``, which is a one-cell study, train on labels made elsewhere: by
another tool, a server no longer running, or people. Items are matched by their text, as the annotation store
matches them, so the table need not share the dataset's ids. A text the table lacks is a failed call (counted,
left out of the labels, and checked against the teacher's ``max_failed_share``), never a silent gap.

``model_id`` carries the file's sha256, so an edited table is a new teacher for the annotation cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..assets import sha256_file
from ..errors import SilverlabelError
from ..files import read_table
from .base import Scored, Teacher, TeacherOptions, register_teacher
from .prompts import Prompt


class TableOptions(TeacherOptions):
    """``[teachers.options]`` of a ``table:`` teacher: only ``p_s``, which a table cannot honour beyond what it
    holds (it reports its own P_S either way)."""


@register_teacher(options=TableOptions)
class TableTeacher(Teacher):
    """``table:PATH`` — see the module docstring."""

    backend = "table"
    batch_items = 4096  # a lookup, not a model call

    def __init__(self, model: str, *, chat: bool = True, p_s: str = "sequence"):
        super().__init__(model, chat=chat, p_s=p_s)
        self.path = Path(model)
        if not self.path.is_file():
            raise SilverlabelError(f"teacher 'table:{model}': no such file; pass a `silverlabel annotate` output")
        self._id = f"table:{self.path.name}@{sha256_file(self.path)[:16]}"
        self._rows: dict[str, tuple[str, list[float] | None, int]] = {}

    @property
    def model_id(self) -> str:
        return self._id

    def prepare(self, prompt: Prompt) -> None:
        """Read the table against this prompt's label set: every label must be one of it, and a text may appear
        twice only with the same label."""
        names = list(prompt.label_names)
        frame = read_table(self.path, strings=False)
        missing = [c for c in ("text", "label") if c not in frame.columns]
        if missing:
            raise SilverlabelError(f"{self.path}: no column '{missing[0]}'; pass a `silverlabel annotate` output "
                                   "(columns item, text, label, p:<label>)")
        cols = [f"p:{n}" for n in names]
        has_p = any(str(c).startswith("p:") for c in frame.columns)
        missing_p = [c for c in cols if c not in frame.columns]
        if has_p and missing_p:  # a P_S for some labels only is no distribution: never read as certain labels
            raise SilverlabelError(f"{self.path}: no column '{missing_p[0]}' beside its other p:<label> columns; "
                                   f"the labels are {names}")
        tokens = frame["prompt_tokens"] if "prompt_tokens" in frame.columns else None
        rows: dict[str, tuple[str, list[float] | None, int]] = {}
        for pos, (text, label) in enumerate(zip(frame["text"], frame["label"])):
            if label is None or (isinstance(label, float) and math.isnan(label)) or label == "":
                continue  # the teacher failed on it there: it fails here too (the text is not found)
            if label not in names:
                raise SilverlabelError(f"{self.path}: row {pos + 1}: label '{label}' is not one of {names}")
            probs = None
            if has_p:
                probs = [float(frame.at[pos, c]) for c in cols]
                if any(math.isnan(p) or p < 0 for p in probs) or not math.isclose(sum(probs), 1, abs_tol=1e-3):
                    raise SilverlabelError(f"{self.path}: row {pos + 1}: the p:<label> columns are not a "
                                           f"distribution ({probs})")
            seen = rows.get(str(text))
            if seen is not None and seen[0] != label:
                raise SilverlabelError(f"{self.path}: row {pos + 1}: the same text has two labels ('{seen[0]}' and "
                                       f"'{label}'); keep one")
            rows[str(text)] = (label, probs, int(tokens[pos]) if tokens is not None else 0)
        self._rows = rows
        self._names = names
        self.label_tokens = [[k] for k in range(len(names))]  # one pseudo-token per label: P_S is read, not scored
        self.prompt = prompt

    def score(self, texts: Sequence[str]) -> list[Scored]:
        out = []
        for text in texts:
            row = self._rows.get(text)
            if row is None:
                out.append(Scored(token_logprobs=[], prompt_tokens=0, error=f"not in {self.path.name}"))
                continue
            label, probs, prompt_tokens = row
            k = self._names.index(label)
            if probs is None:
                probs = [1.0 if j == k else 0.0 for j in range(len(self._names))]
            with np.errstate(divide="ignore"):
                logs = [[float(v)] for v in np.log(probs)]
            out.append(Scored(token_logprobs=logs, prompt_tokens=prompt_tokens, choice=k))
        return out
