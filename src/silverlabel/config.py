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
    # demonstrations per prompt; several values make one configuration each (a multiverse of prompts)
    k_shot: int | list[int] = 3
    demo_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    # the prompt's instruction in place of the dataset's task ("{task}" in it stands for the task)
    instruction: str | None = None
    # named instruction variants (paraphrases), each one configuration; "@path" reads a file (relative to the
    # config file); the first is the teacher's main configuration
    instructions: dict[str, str] = Field(default_factory=dict)
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

    @field_validator("k_shot")
    @classmethod
    def _k_shot(cls, v: int | list[int]) -> int | list[int]:
        ks = [v] if isinstance(v, int) else v
        if not ks or any(k < 0 for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"k_shot must be a number of demonstrations (0 or more) or a list of distinct ones, "
                             f"got {v}")
        return v

    @field_validator("instruction")
    @classmethod
    def _instruction(cls, v: str | None) -> str | None:
        return None if v is None else _instruction_text(v, "instruction")

    @field_validator("instructions")
    @classmethod
    def _instructions(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not name.strip() or "/" in name:
                raise ValueError(f"instruction variant name '{name}' must be non-empty and without '/'")
        return {name: _instruction_text(text, f"instructions.{name}") for name, text in v.items()}

    @model_validator(mode="after")
    def _options(self):
        from .teachers import parse_teacher_uri, validate_options

        if self.instruction is not None and self.instructions:
            raise ValueError(f"teacher '{self.name}': give instruction or instructions (named variants), not both")

        try:
            validate_options(parse_teacher_uri(self.uri)[0], self.options)
        except SilverlabelError as exc:
            raise ValueError(f"teacher '{self.name}': {exc}") from None
        return self

    @field_serializer("uri")
    def _redacted(self, v: str) -> str:
        from .teachers import redact_uri

        return redact_uri(v)

    def variants(self) -> list[tuple[str, TeacherSpec]]:
        """One teacher per instruction variant x k_shot value, each with a single instruction and k; the first is
        this teacher's main configuration and keeps its name (so label sources, mitigations and estimates that
        name the teacher use it), the others are called ``name/variant`` (``/kK`` added when k varies). Each comes
        with its instruction variant's name ("default": the dataset's task)."""
        ks = [self.k_shot] if isinstance(self.k_shot, int) else list(self.k_shot)
        named = list(self.instructions.items()) or [(None, self.instruction)]
        out = []
        for i, (vname, text) in enumerate(named):
            for j, k in enumerate(ks):
                name = self.name if i == 0 and j == 0 else "/".join(
                    [self.name, *([vname] if vname else []), *([f"k{k}"] if len(ks) > 1 else [])])
                out.append((vname or "default", self.model_copy(update={"name": name, "k_shot": k,
                                                                        "instruction": text, "instructions": {}})))
        return out

    def recipe(self) -> dict[str, Any]:
        """What makes this teacher's labels (not its name): the recorded config less unset prompt options, so a
        teacher written before prompt variants existed keeps its run ids."""
        out = self.to_dict()
        out.pop("name")
        for key, empty in (("instruction", None), ("instructions", {})):
            if out.get(key) == empty:
                out.pop(key)
        return out


def _instruction_text(value: str, where: str) -> str:
    """The instruction itself, or the text of the file an ``@path`` names (relative to the working directory;
    :func:`load_study_config` makes them relative to the config file)."""
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise ValueError(f"{where}: prompt file '{path}' does not exist; give the path relative to the config "
                             "file")
        value = path.read_text(encoding="utf-8")
        if not value.strip():
            raise ValueError(f"{where}: prompt file '{path}' is empty; write the instruction in it")
        return value.strip()
    if not value.strip():
        raise ValueError(f"{where}: the instruction is empty")
    return value


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


class _Question(_Config):
    """What is estimated: an estimand of :mod:`silverlabel.estimands` by name, with the fields it takes."""

    estimand: str = "prevalence"
    target_class: str | None = None  # the class whose share or indicator is estimated
    covariates: list[str] = Field(default_factory=list)  # ols / logistic
    covariate: str | None = None  # difference: the covariate whose groups are compared
    groups: list[Any] | None = None  # difference: its two groups' values (first minus second)
    split: float | None = None  # difference: above the split minus at or below it

    @model_validator(mode="after")
    def _estimand(self):
        self.estimand_object()
        return self

    def estimand_object(self):
        from .estimands import make_estimand

        try:
            return make_estimand(self.estimand, target_class=self.target_class, covariates=self.covariates,
                                 covariate=self.covariate, groups=self.groups, split=self.split)
        except SilverlabelError as exc:
            raise ValueError(str(exc)) from None

    def text_covariates(self) -> list[str]:
        """The covariates a study computes from the texts for this question (checked: chars, words,
        contains:REGEX)."""
        estimand = self.estimand_object()
        estimand.check_text_covariates()
        return estimand.covariate_names()


class EstimateSpec(_Question):
    """Valid conclusions in a study: a gold sample of each size drawn by a design from the teacher-labelled training
    items, and every method's estimate with its interval against the truth from all their gold labels."""

    gold_sizes: list[int] = Field(default_factory=lambda: [100, 200], min_length=1)
    design: Literal["uniform", "active"] = "uniform"
    floor: float = Field(0.1, gt=0, le=1)  # the active design's uniform share
    level: float = Field(0.9, gt=0, lt=1)
    teacher: str | None = None  # default: the study's first teacher
    student: bool = False  # also PPI++ with a cross-fitted student (5 student runs per gold size)
    target_width: float = Field(0.05, gt=0)  # half-width the power analysis plans for
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _sizes(self):
        if any(n < 3 for n in self.gold_sizes):
            raise ValueError(f"gold sizes must be 3 or more, got {self.gold_sizes}")
        return self


class HypothesisSpec(_Question):
    """A claim a study makes, decided by every teacher configuration: H0 "the parameter equals ``threshold``"
    (a prevalence; 0 for a difference or a coefficient) at ``level``, two-sided; the decision is the sign of a
    significant result or "not significant"."""

    name: str
    threshold: float | None = None  # prevalence: the share the class is tested against (0 to 1)
    coefficient: str | None = None  # ols / logistic: the coefficient whose sign is the claim (default: the first)
    level: float = Field(0.95, gt=0, lt=1)
    teachers: list[str] = Field(default_factory=list)  # [[teachers]] names whose configurations decide (default all)
    gold_size: int = Field(200, ge=3)  # the gold sample PPI++ uses, drawn uniformly
    draws: int = Field(20, ge=1)  # how many gold samples are drawn (error rates average over them)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _null(self):
        est = self.estimand_object()
        try:
            est.tested(self.coefficient)
            est.null(self.threshold)
        except SilverlabelError as exc:
            raise ValueError(f"hypothesis '{self.name}': {exc}") from None
        return self

    @property
    def null(self) -> float:
        return self.estimand_object().null(self.threshold)


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
    hypotheses: list[HypothesisSpec] = Field(default_factory=list)
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

    def teacher_specs(self) -> dict[str, TeacherSpec]:
        """Every teacher configuration by name: each ``[[teachers]]`` entry's instruction variants x k_shot
        values (:meth:`TeacherSpec.variants`), the main one under the entry's own name."""
        return {v.name: v for t in self.teachers for _, v in t.variants()}

    @model_validator(mode="after")
    def _names(self):
        teachers = [t.name for t in self.teachers]
        configurations = [v.name for t in self.teachers for _, v in t.variants()]
        dup = sorted({n for n in configurations if configurations.count(n) > 1})
        if dup:
            raise ValueError(f"two teacher configurations are called '{dup[0]}'; rename a teacher or an instruction "
                             "variant")
        if not self.label_sources and not self.mitigations and not self.hypotheses and not self.estimates:
            raise ValueError("nothing to do: list label sources in label_sources (gold, teacher), or add "
                             "[[mitigations]], [[estimates]] or [[hypotheses]]")
        if len(set(teachers)) != len(teachers):
            raise ValueError(f"teacher names repeat: {teachers}")
        for s in self.label_sources:
            if s.startswith("teacher:") and s.split(":", 1)[1] not in configurations:
                raise ValueError(f"label source '{s}' names no teacher configuration of [[teachers]] "
                                 f"({', '.join(configurations)})")
            if s.startswith("teacher") and not teachers:
                raise ValueError("label source 'teacher' needs at least one [[teachers]] entry")
        for m in self.mitigations:
            if not teachers:
                raise ValueError(f"mitigation '{m.policy}' needs at least one [[teachers]] entry")
            if m.teacher is not None and m.teacher not in configurations:
                raise ValueError(f"mitigation '{m.policy}' names teacher '{m.teacher}', which is not in [[teachers]]")
            _check_policy(m, self.teacher_specs()[m.teacher or teachers[0]])
        for e in self.estimates:
            if not teachers:
                raise ValueError("[[estimates]] needs at least one [[teachers]] entry")
            if e.teacher is not None and e.teacher not in configurations:
                raise ValueError(f"[[estimates]] names teacher '{e.teacher}', which is not in [[teachers]]")
            e.text_covariates()
        hypotheses = [h.name for h in self.hypotheses]
        if len(set(hypotheses)) != len(hypotheses):
            raise ValueError(f"hypothesis names repeat: {hypotheses}")
        for h in self.hypotheses:
            if not teachers:
                raise ValueError("[[hypotheses]] needs at least one [[teachers]] entry")
            unknown = [t for t in h.teachers if t not in teachers]
            if unknown:
                raise ValueError(f"hypothesis '{h.name}' names teacher '{unknown[0]}', which is not in [[teachers]]")
            try:
                h.text_covariates()
            except ValueError as exc:
                raise ValueError(f"hypothesis '{h.name}': {exc}") from None
        students = [s.name for s in self.students]
        if len(set(students)) != len(students):
            raise ValueError(f"student names repeat: {students}; give each [[students]] a name")
        datasets = [d.key for d in self.datasets]
        if len(set(datasets)) != len(datasets):
            raise ValueError(f"dataset names repeat: {datasets}; give each [[datasets]] a name")
        return self


def _beside(value, folder: Path):
    """An ``@file`` instruction with a relative path, made relative to ``folder``; anything else as it is."""
    if isinstance(value, str) and value.startswith("@") and not Path(value[1:]).is_absolute():
        return f"@{folder / value[1:]}"
    return value


def load_study_config(path: str | Path) -> StudyConfig:
    """Read a study TOML file; a bare name (``quick``) means a config shipped with silverlabel."""
    path = Path(path)
    if not path.exists() and path.suffix == "" and (SHIPPED_CONFIGS / f"{path.name}.toml").exists():
        path = SHIPPED_CONFIGS / f"{path.name}.toml"
    if not path.exists():
        shipped = ", ".join(p.stem for p in sorted(SHIPPED_CONFIGS.glob("*.toml")))
        raise SilverlabelError(f"{path}: no such config file; give a TOML path or a shipped config ({shipped})")
    data = _read_toml(path)
    for t in data.get("teachers", []) if isinstance(data.get("teachers"), list) else []:
        if isinstance(t, dict):  # "@file" prompts are relative to the config file
            if "instruction" in t:
                t["instruction"] = _beside(t["instruction"], path.parent)
            if isinstance(t.get("instructions"), dict):
                t["instructions"] = {k: _beside(v, path.parent) for k, v in t["instructions"].items()}
    return StudyConfig.from_dict(data, where=str(path))


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SilverlabelError(f"{path}: not valid TOML ({exc}); fix the syntax at that line") from None


class HypothesesFile(_Config):
    """A TOML file of ``[[hypotheses]]`` entries (what ``silverlabel estimate --hypotheses`` reads)."""

    hypotheses: list[HypothesisSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self):
        names = [h.name for h in self.hypotheses]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two hypotheses are called '{dup[0]}'; give each its own name")
        return self


def load_hypotheses(path: str | Path) -> list[HypothesisSpec]:
    path = Path(path)
    if not path.exists():
        raise SilverlabelError(f"{path}: no such file; give a TOML file with [[hypotheses]] entries")
    return list(HypothesesFile.from_dict(_read_toml(path), where=str(path)).hypotheses)


SHIPPED_CONFIGS = Path(__file__).parent / "configs"
