"""A rehearsal of a study: the same grid shape, offline and small, so the whole protocol runs (and every section
of its report can be read) on two CPU cores before a GPU is spent on the real thing.

``silverlabel study run configs/paper.toml --rehearse`` keeps what makes the grid's shape: its datasets (as their
shipped stand-ins), its label sources, its mitigations with their budgets and demonstration sets, its students'
names and recipes (epochs, batch size, warm-up, ...), and the first few of its seeds. It changes what needs a GPU
or the internet, the same way for every config:

- teachers, in config order, become the shipped GGUF teachers from the smallest up (the paper's 3B becomes
  SmolLM2-135M, its 7B Qwen2.5-0.5B); a config with more teachers reuses the largest;
- students become the shipped MiniLM at a learning rate that learns from a few dozen items (3e-4, see
  configs/quick.toml) and 64 tokens;
- every dataset gets ``n_train`` training and ``n_test`` test items, and the grid always has a few training sizes,
  so the report has scaling curves and plateaus even for a config without ``sizes`` (the paper's scaling
  experiment is ``paper-scaling.toml``; the rehearsal folds it into the one run).

The numbers of a rehearsal are not the paper's and are not meant to be: it checks that the protocol runs end to
end, that every table and figure is filled, and what each stage costs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import StudyConfig

OFFLINE_TEACHERS = ("llamacpp:smollm2-135m", "llamacpp:qwen2.5-0.5b")  # smallest first


@dataclass(frozen=True)
class RehearsalScale:
    """How small a rehearsal is. The defaults fit the paper's grid into about half an hour on 2 CPU cores
    (docs/rehearsal.md has the measurement)."""

    n_train: int = 40
    n_test: int = 80
    sizes: tuple[int, ...] = (20, 40)
    seeds: int = 3
    student_model: str = "minilm"
    learning_rate: float = 3e-4
    max_length: int = 64
    bootstrap: int = 200
    teachers: tuple[str, ...] = OFFLINE_TEACHERS


def rehearsal_config(config: StudyConfig, scale: RehearsalScale = RehearsalScale()) -> StudyConfig:
    """The offline, small-scale twin of ``config`` (same datasets, label sources, mitigations, student names)."""
    data = config.to_dict()
    data["name"] = f"{config.name}-rehearsal"
    data["seeds"] = list(config.seeds[:scale.seeds])
    data["sizes"] = [s for s in scale.sizes if s <= scale.n_train] or [scale.n_train]
    data["bootstrap"] = min(config.bootstrap, scale.bootstrap)
    for d in data["datasets"]:
        d.update(n_train=scale.n_train, n_test=scale.n_test, n_validation=None)
    for i, t in enumerate(data["teachers"]):
        t["uri"] = scale.teachers[min(i, len(scale.teachers) - 1)]
        t["chat"] = True
        t["options"] = {}  # a server's options (concurrency, timeout, ...) are not llama.cpp's
    for s in data["students"]:
        s.update(model=scale.student_model, learning_rate=scale.learning_rate, max_length=scale.max_length,
                 fp16="off", save_model=False)
    return StudyConfig.from_dict(data, where=f"the rehearsal of {config.name}")
