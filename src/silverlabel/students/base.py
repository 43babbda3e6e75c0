"""The student contract and its registry: a trainer takes texts and targets and returns a :class:`StudentRun`.

A recipe's ``backend`` names the trainer (``hf``: any Hugging Face sequence classifier, the paper's); the study,
``silverlabel train`` and the cross-fitted students of ``estimate`` find it here and only here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import SilverlabelError


@dataclass
class StudentRun:
    """One trained student's test predictions and how it got there."""

    seed: int
    preds: np.ndarray
    probs: np.ndarray
    curve: list[dict] = field(default_factory=list)  # per epoch: train_loss, val_macro_f1
    best_epoch: int = 0
    steps: int = 0
    seconds: float = 0.0
    device: str = "cpu"


Trainer = Callable[..., StudentRun]  # train_student's signature: (texts, targets, *, num_labels, config, seed, ...)

STUDENTS: dict[str, Trainer] = {}


def register_student(name: str) -> Callable[[Trainer], Trainer]:
    """Decorator: make a trainer available as ``backend = "NAME"`` in a student recipe. It is called with
    ``train_student``'s arguments, must build a fresh model from ``seed``, and return a :class:`StudentRun`."""
    def add(fn: Trainer) -> Trainer:
        STUDENTS[name] = fn
        return fn
    return add


def get_student(name: str) -> Trainer:
    if name not in STUDENTS:
        raise SilverlabelError(f"student backend '{name}' is unknown; choose one of {', '.join(sorted(STUDENTS))} "
                               "(or register one with silverlabel.register_student)")
    return STUDENTS[name]
