"""Validated configs, one per stage. Unknown keys are errors, never ignored, and every config round-trips
through ``to_dict``/``from_dict`` so each run folder can record exactly what made it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from .errors import SilverlabelError


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "config"):
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            path = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] == "extra_forbidden":
                raise SilverlabelError(f"{where}: unknown key '{path}'; check its spelling") from None
            msg = err["msg"].removeprefix("Value error, ")
            if path == "(top level)":
                raise SilverlabelError(f"{where}: {msg}") from None
            raise SilverlabelError(f"{where}: '{path}': {msg}") from None


class TrainConfig(_Config):
    """The student recipe; defaults are the paper's (RoBERTa-base, 3 epochs, AdamW 2e-5, batch 16, wd 0.01,
    5 % linear warm-up, max length 128, best validation macro-F1 checkpoint, fp16 on GPU)."""

    backend: str = "hf"  # the trainer, by its name in the student registry (silverlabel.register_student)
    model: str = "auto"  # roberta-base (the paper's) when the hub is reachable, else the shipped MiniLM
    epochs: int = Field(3, ge=1)
    learning_rate: float = Field(2e-5, gt=0)
    batch_size: int = Field(16, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_length: int = Field(128, ge=8)
    eval_batch_size: int = Field(256, ge=1)
    select_best: bool = True
    labels: Literal["hard", "soft"] = "hard"
    fp16: Literal["auto", "on", "off"] = "auto"
    bucket_by_length: bool = True
    save_model: bool = False  # write the chosen checkpoint as safetensors beside the run (off: they are large)

    def steps(self, n_train: int) -> int:
        """Optimizer steps for ``n_train`` examples: every epoch ends with a short last batch."""
        return self.epochs * -(-n_train // self.batch_size)


class DatasetSpec(_Config):
    """One dataset of a study: a preset, a file (with its column mapping) or ``hf:NAME``, and its split."""

    source: str
    name: str | None = None  # how reports call it (default: the source)
    text_column: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    task: str | None = None  # the task description in the teacher's prompt (default: the preset's)
    n_train: int = Field(5000, ge=2)  # a cap, like the paper's 5000; training sizes are subsets of it
    n_test: int = Field(2000, ge=2)
    n_validation: int | None = Field(None, ge=1)
    split_seed: int = Field(0, ge=0)

    @property
    def key(self) -> str:
        """How progress bars, tables and results name the dataset: its ``name``, else a file's or folder's name
        without its extensions (``data/tweets.csv.gz`` is ``tweets``), else the preset or ``hf:`` source."""
        if self.name:
            return self.name
        if self.source.startswith("hf:") or not any(c in self.source for c in "/\\."):
            return self.source
        name = Path(self.source).name
        while (suffix := Path(name).suffix.lower()) in _DATA_SUFFIXES:
            name = name[: -len(suffix)]
        return name or self.source


_DATA_SUFFIXES = {".gz", ".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt"}


class TeacherSpec(_Config):
    """One teacher: a backend URI and the demonstration sets it is prompted with (the first is its main one;
    ensembles use all of them)."""

    name: str
    uri: str
    chat: bool = True
    k_shot: int = Field(3, ge=0)
    demo_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    balanced: bool = False
    # backend options, checked by the options model the backend registered (e.g. concurrency, scoring, n_threads)
    options: dict[str, Any] = Field(default_factory=dict)
    # the study stops when more than this share of the teacher's items fail (records are kept; a rerun retries)
    max_failed_share: float = Field(0.05, ge=0, le=1)

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        from .teachers import parse_teacher_uri

        try:
            parse_teacher_uri(v)  # an unknown backend is found before anything is written or annotated
        except SilverlabelError as exc:
            raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _options(self):
        from .teachers import parse_teacher_uri, validate_options

        try:
            validate_options(parse_teacher_uri(self.uri)[0], self.options)
        except SilverlabelError as exc:
            raise ValueError(f"teacher '{self.name}': {exc}") from None
        return self

    @field_serializer("uri")
    def _redacted(self, v: str) -> str:
        from .teachers import redact_uri

        return redact_uri(v)


class StudentSpec(TrainConfig):
    """A student recipe with a name for the report."""

    name: str = "student"


class MitigationSpec(_Config):
    """A mitigation policy used as label sources, one per gold budget (a share like 0.05 or "5%", or a count)."""

    policy: str
    teacher: str | None = None  # default: the study's first teacher
    budgets: list[float | int | str] = Field(default_factory=lambda: [0.05], min_length=1)
    action: Literal["replace", "drop"] = "replace"
    options: dict[str, Any] = Field(default_factory=dict)


class EstimateSpec(_Config):
    """Valid conclusions in a study: a gold sample of each size drawn by a design from the teacher-labelled training
    items, and every method's estimate with its interval against the truth from all their gold labels."""

    estimand: Literal["prevalence", "ols", "logistic"] = "prevalence"
    gold_sizes: list[int] = Field(default_factory=lambda: [100, 200], min_length=1)
    design: Literal["uniform", "active"] = "uniform"
    floor: float = Field(0.1, gt=0, le=1)  # the active design's uniform share
    level: float = Field(0.9, gt=0, lt=1)
    teacher: str | None = None  # default: the study's first teacher
    target_class: str | None = None  # ols / logistic: the class whose indicator is explained
    covariates: list[Literal["chars", "words"]] = Field(default_factory=list)  # computed from each text
    student: bool = False  # also PPI++ with a cross-fitted student (5 student runs per gold size)
    target_width: float = Field(0.05, gt=0)  # half-width the power analysis plans for
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _regression(self):
        if self.estimand != "prevalence" and (not self.covariates or self.target_class is None):
            raise ValueError(f"estimand '{self.estimand}' needs covariates (chars, words) and a target_class")
        if any(n < 3 for n in self.gold_sizes):
            raise ValueError(f"gold sizes must be 3 or more, got {self.gold_sizes}")
        return self


def _check_seeds(v: list[int]) -> list[int]:
    if not v:
        raise ValueError("at least one seed is needed")
    if any(s < 0 for s in v):
        raise ValueError(f"seeds must be 0 or more, got {v}")
    if len(set(v)) != len(v):
        raise ValueError(f"seeds repeat: {v}")
    return v


def _check_policy(m: MitigationSpec, teacher: TeacherSpec) -> None:
    from .mitigations import POLICIES, resolve_budget

    if m.policy not in POLICIES:
        raise ValueError(f"mitigation policy '{m.policy}' is unknown; choose one of {', '.join(sorted(POLICIES))}")
    unknown = sorted(set(m.options) - set(POLICIES[m.policy].defaults))
    if unknown:
        raise ValueError(f"mitigation '{m.policy}' has no option '{unknown[0]}'; its options are: "
                         f"{', '.join(sorted(POLICIES[m.policy].defaults)) or 'none'}")
    for b in m.budgets:
        try:
            resolve_budget(b, 1_000_000)
        except SilverlabelError as exc:
            raise ValueError(str(exc)) from None
    if m.policy == "ensemble" and len(teacher.demo_seeds) < 2:
        raise ValueError(f"mitigation 'ensemble' needs teacher '{teacher.name}' to have 2 or more demo_seeds "
                         f"(it has {teacher.demo_seeds})")


class StudyConfig(_Config):
    """The grid: datasets x label sources x students x training sizes x seeds."""

    name: str = "study"
    datasets: list[DatasetSpec] = Field(min_length=1)
    teachers: list[TeacherSpec] = Field(default_factory=list)
    # "gold", "teacher" (every teacher) or "teacher:NAME"; mitigations add their own sources
    label_sources: list[str] = Field(default_factory=lambda: ["gold", "teacher"])  # may be empty with mitigations
    mitigations: list[MitigationSpec] = Field(default_factory=list)
    estimates: list[EstimateSpec] = Field(default_factory=list)
    students: list[StudentSpec] = Field(default_factory=lambda: [StudentSpec()], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    sizes: list[int] | None = None  # training sizes (nested subsets of the training split); default: all of it
    bootstrap: int = Field(1000, ge=0)  # resamples of the test items for the 95 % intervals (0: none)

    _seeds = field_validator("seeds")(classmethod(lambda cls, v: _check_seeds(v)))

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            if not v or any(s < 2 for s in v):
                raise ValueError(f"training sizes must be 2 or more, got {v}")
            v = sorted(set(v))
        return v

    @field_validator("label_sources")
    @classmethod
    def _sources(cls, v: list[str]) -> list[str]:
        for s in v:
            if s not in ("gold", "teacher") and not s.startswith("teacher:"):
                raise ValueError(f"label source '{s}' is not gold, teacher or teacher:NAME")
        return v

    @model_validator(mode="after")
    def _names(self):
        teachers = [t.name for t in self.teachers]
        if not self.label_sources and not self.mitigations:
            raise ValueError("no label sources: list some in label_sources (gold, teacher) or add [[mitigations]]")
        if len(set(teachers)) != len(teachers):
            raise ValueError(f"teacher names repeat: {teachers}")
        for s in self.label_sources:
            if s.startswith("teacher:") and s.split(":", 1)[1] not in teachers:
                raise ValueError(f"label source '{s}' names no teacher of [[teachers]] ({', '.join(teachers)})")
            if s.startswith("teacher") and not teachers:
                raise ValueError("label source 'teacher' needs at least one [[teachers]] entry")
        for m in self.mitigations:
            if not teachers:
                raise ValueError(f"mitigation '{m.policy}' needs at least one [[teachers]] entry")
            if m.teacher is not None and m.teacher not in teachers:
                raise ValueError(f"mitigation '{m.policy}' names teacher '{m.teacher}', which is not in [[teachers]]")
            _check_policy(m, next(t for t in self.teachers if t.name == (m.teacher or teachers[0])))
        for e in self.estimates:
            if not teachers:
                raise ValueError("[[estimates]] needs at least one [[teachers]] entry")
            if e.teacher is not None and e.teacher not in teachers:
                raise ValueError(f"[[estimates]] names teacher '{e.teacher}', which is not in [[teachers]]")
        students = [s.name for s in self.students]
        if len(set(students)) != len(students):
            raise ValueError(f"student names repeat: {students}; give each [[students]] a name")
        datasets = [d.key for d in self.datasets]
        if len(set(datasets)) != len(datasets):
            raise ValueError(f"dataset names repeat: {datasets}; give each [[datasets]] a name")
        return self


def load_study_config(path: str | Path) -> StudyConfig:
    """Read a study TOML file; a bare name (``quick``) means a config shipped with silverlabel."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    path = Path(path)
    if not path.exists() and path.suffix == "" and (SHIPPED_CONFIGS / f"{path.name}.toml").exists():
        path = SHIPPED_CONFIGS / f"{path.name}.toml"
    if not path.exists():
        shipped = ", ".join(p.stem for p in sorted(SHIPPED_CONFIGS.glob("*.toml")))
        raise SilverlabelError(f"{path}: no such config file; give a TOML path or a shipped config ({shipped})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SilverlabelError(f"{path}: not valid TOML ({exc}); fix the syntax at that line") from None
    return StudyConfig.from_dict(data, where=str(path))


SHIPPED_CONFIGS = Path(__file__).parent / "configs"
