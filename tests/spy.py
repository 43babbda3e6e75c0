"""What a teacher's backend returned, recorded beside what the base class made of it (no pytest import: the vLLM
engine worker uses it in vLLM's own venv)."""


def record_scores(teacher) -> list:
    """Wrap ``teacher.score`` so every batch's raw ``Scored`` answers are appended to the returned list; undo with
    ``del teacher.score``."""
    scored: list = []
    original = teacher.score

    def score(texts):
        scored.extend(original(texts))
        return scored[-len(texts):]

    teacher.score = score
    return scored
