"""Student classifiers: a fresh model per seed, trained on gold, teacher or soft labels, found by backend name."""

from .base import STUDENTS, StudentRun, get_student, register_student
from .hf import predict_proba, resolve_model, train_student

__all__ = ["STUDENTS", "StudentRun", "get_student", "predict_proba", "register_student", "resolve_model",
           "train_student"]
