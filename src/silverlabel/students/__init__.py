"""Student classifiers: a fresh model per seed, trained on gold, teacher or soft labels."""

from .hf import StudentRun, predict_proba, resolve_model, train_student

STUDENTS = {"hf": train_student}  # one backend so far: any AutoModelForSequenceClassification

__all__ = ["STUDENTS", "StudentRun", "predict_proba", "resolve_model", "train_student"]
