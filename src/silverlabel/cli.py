"""The ``silverlabel`` command: a thin layer over the Python API (each command is a few lines)."""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import SilverlabelError
from .files import check_writable, read_table
from .terminal import (
    console,
    print_annotation_summary,
    print_batches,
    print_estimates,
    print_evaluation,
    print_groups,
    print_hypotheses,
    print_plan,
    print_predict_summary,
    print_spend_estimate,
    print_study,
)


def _flags_show_no_type() -> None:
    """typer 0.29 writes `<bool>` after every flag in --help (`--version <bool>`, even `--help <bool>`), as if the
    flag took a value; a flag takes none, so its type column stays empty. Other typer versions lack the hook or
    do not need it, and are left alone."""
    from typer import core

    option = getattr(core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "_flags_show_no_type", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich._flags_show_no_type = True
    option.display_type_rich = display_type_rich


_flags_show_no_type()
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Label text with an LLM teacher, train small students on those labels, and measure what "
                       "the shortcut costs against gold labels (accuracy, macro-F1, stability across seeds).")
_STATE = {"debug": False}


def _version(value: bool) -> None:
    if value:
        console.print(f"silverlabel {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or info messages."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    from rich.logging import RichHandler

    from .progress import set_quiet

    _STATE["debug"] = debug
    set_quiet(quiet)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False, show_time=False)],
                        force=True)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SilverlabelError(f"--seeds '{text}' is not a comma-separated list of integers, e.g. 1,2,3") from None


DEMO_OUT = Path("silverlabel-demo")  # fixed, so a plain rerun of `silverlabel demo` resumes


def _quick() -> dict:
    """configs/quick.toml as data, for the demo's help texts (read, not copied, so they cannot drift from it)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    data = tomllib.loads((Path(__file__).parent / "configs" / "quick.toml").read_text(encoding="utf-8"))
    d, s = data["datasets"][0], data["students"][0]
    return {"datasets": ", ".join(x["source"] for x in data["datasets"]), "n_train": d["n_train"],
            "n_test": d["n_test"], "seeds": ",".join(map(str, data["seeds"])), "teacher": data["teachers"][0]["uri"],
            "student": s["model"], "lr": _e(s["learning_rate"]) if "learning_rate" in s else "TrainConfig's"}


def _e(value: float) -> str:
    """3e-4, not 0.0003 (how a learning rate is written)."""
    mantissa, exponent = f"{value:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


_QUICK = _quick()


def parse_options(pairs: Sequence[str], *, example: str) -> dict[str, Any]:
    """``--option KEY=VALUE`` strings to options; values are read as JSON (0.3, 50, true, "cv"), else as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SilverlabelError(f"--option '{pair}' is not KEY=VALUE, e.g. --option {example}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@app.command()
def demo(
    out: Optional[Path] = typer.Option(None, "--out", help=f"Output folder (default: ./{DEMO_OUT}). Rerunning into "
                                       "the same folder reuses finished work."),
    dataset: Optional[str] = typer.Option(None, help=f"One dataset instead of quick.toml's ({_QUICK['datasets']}): "
                                          "a preset (imdb, toxic, ecommerce, manifestos) or a data file."),
    teacher: Optional[str] = typer.Option(None, help=f"Teacher URI instead of {_QUICK['teacher']}, e.g. "
                                          "llamacpp:smollm2-135m or llamacpp:/path/model.gguf."),
    student: Optional[str] = typer.Option(None, help=f"Student instead of '{_QUICK['student']}' (shipped): a hub "
                                          "name or a local model folder."),
    n_train: Optional[int] = typer.Option(None, help=f"Training items per dataset (quick.toml: {_QUICK['n_train']})."),
    n_test: Optional[int] = typer.Option(None, help=f"Held-out test items per dataset (quick.toml: "
                                         f"{_QUICK['n_test']})."),
    seeds: Optional[str] = typer.Option(None, help=f"Student seeds, comma-separated (quick.toml: {_QUICK['seeds']})."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (the paper's recipe: 3)."),
    learning_rate: Optional[float] = typer.Option(None, help=f"Student learning rate (quick.toml: {_QUICK['lr']}; "
                                                  "the paper's 2e-5 needs its 5000 items: at a few hundred, MiniLM "
                                                  "at 2e-5 still predicts one class)."),
    raw_prompt: bool = typer.Option(False, help="Send the bare prompt instead of wrapping it in the model's chat "
                                    "template."),
) -> None:
    """Run the offline quick study (configs/quick.toml: two shipped datasets, gold vs teacher labels, 3 seeds)
    and print Table 1; the same code path as `silverlabel study run`, with these options as overrides."""
    from .study import demo_config, run_study

    out = out or DEMO_OUT
    console.print(f"silverlabel demo: writing to {out.resolve()} (a rerun into it reuses finished work)",
                  highlight=False, soft_wrap=True)
    config = demo_config(dataset=dataset, teacher=teacher, student=student, n_train=n_train, n_test=n_test,
                         seeds=_seeds(seeds) if seeds else None, epochs=epochs, learning_rate=learning_rate,
                         chat=not raw_prompt)
    results = run_study(config, out, offline=True)
    print_study(results, out)


study_app = typer.Typer(no_args_is_help=True, help="Run a study grid from a TOML config, resume it, report it.")
app.add_typer(study_app, name="study")


@study_app.command("run")
def study_run(
    config: Path = typer.Argument(..., help="Study TOML file, or the name of a shipped one (quick, "
                                  "scaling-quick, paper)."),
    out: Path = typer.Option(..., "--out", help="Output folder; rerunning into it resumes (finished runs and "
                             "annotations are never redone)."),
    executor: str = typer.Option("local", help="local (one run after the other) or ray (each run a Ray task)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local Ray)."),
    cpus_per_run: int = typer.Option(1, help="CPUs each Ray task asks for."),
    dry_run: bool = typer.Option(False, help="Print the grid, what is already done and the work left; load no "
                                 "model. Cells that cannot run are marked with the reason; the exit code is 0."),
    rehearse: bool = typer.Option(False, help="Run the config's grid shape offline and small instead (shipped "
                                  "stand-ins, teachers and student; see docs/rehearsal.md)."),
) -> None:
    """Run (or resume) every cell of the grid, then write results.json and the report."""
    from . import study
    from .config import load_study_config
    from .rehearsal import rehearsal_config

    cfg = load_study_config(config)
    if rehearse:
        cfg = rehearsal_config(cfg)
    if dry_run:  # the --dry-run flag; study.dry_run computes the StudyPlan it prints
        print_plan(study.dry_run(cfg, out, offline=True if rehearse else None), cfg.name, cfg.hypotheses)
        return
    options = {"address": ray_address, "cpus_per_run": cpus_per_run} if executor == "ray" else {}
    results = study.run_study(cfg, out, executor=executor, executor_options=options,
                              offline=True if rehearse else None)
    print_study(results, out)


@study_app.command("report")
def study_report(out: Path = typer.Argument(..., help="A study's output folder.")) -> None:
    """(Re)write report.html and report.md from a study's results.json."""
    from .reporting import write_study_report

    paths = write_study_report(out)
    console.print(f"wrote {paths['html']} and {paths['markdown']}")


@app.command()
def datasets() -> None:
    """List the dataset presets named after the paper's datasets, with class counts and provenance."""
    from .data import PRESETS, load_preset

    table = Table(title="dataset presets (offline)")
    for col in ("preset", "paper dataset", "source used offline", "items", "classes (counts)"):
        table.add_column(col)
    for name in PRESETS:
        ds = load_preset(name, offline=True)
        counts = ", ".join(f"{k} {v}" for k, v in ds.class_counts().items())
        kind = "real" if ds.provenance.real else "stand-in"
        table.add_row(name, PRESETS[name].paper_dataset, f"[{kind}] {ds.provenance.source}", str(len(ds)), counts)
    console.print(table)
    console.print("Online, imdb and ecommerce load the real source (hub / Zenodo) when reachable; manifestos "
                  "always uses its stand-in (the Manifesto Project API needs a key; not implemented yet).")


def _load(data: str, text_column, label_column, id_column, task):
    from .data import load_dataset

    return load_dataset(data, text_column=text_column, label_column=label_column, id_column=id_column, task=task)


@app.command()
def annotate(
    data: str = typer.Argument(..., help="Preset name or data file (CSV, TSV, JSONL, Parquet) or hf:NAME."),
    out: Path = typer.Option(..., "--out", help="Output table: .parquet, .csv or .jsonl."),
    teacher: str = typer.Option("llamacpp:qwen2.5-0.5b", help="Teacher URI (BACKEND:MODEL)."),
    text_column: Optional[str] = typer.Option(None, help="Column holding the text."),
    label_column: Optional[str] = typer.Option(None, help="Column holding the gold label (demonstrations and "
                                               "the accuracy summary come from it)."),
    id_column: Optional[str] = typer.Option(None, help="Column holding a unique item id (default: row number)."),
    task: Optional[str] = typer.Option(None, help="Task description in the prompt."),
    n_train: int = typer.Option(5000, help="Annotate at most this many training items."),
    n_test: int = typer.Option(2000, help="Items held out as the test split (not annotated)."),
    k: int = typer.Option(3, help="Number of demonstrations."),
    demo_seed: int = typer.Option(0, help="Seed that draws the demonstrations (identifies the demo set)."),
    balanced: bool = typer.Option(False, help="Draw demonstrations class by class."),
    raw_prompt: bool = typer.Option(False, help="Do not wrap the prompt in the model's chat template."),
    cache: Optional[Path] = typer.Option(None, help="SQLite annotation cache (default: in the user cache dir)."),
    dry_run: bool = typer.Option(False, help="Print the first prompt, item and call counts and the cached share "
                                 "without loading the model (hosted teachers: the estimated spend)."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Teacher option KEY=VALUE, repeated (e.g. "
                                               "p_s_method=top_logprobs, price_input=0.15, max_cost=2, "
                                               "concurrency=16); checked by the backend's options."),
    executor: str = typer.Option("local", help="local, or ray: Ray Data workers, each loading the teacher once; "
                                 "this process still reads and writes the cache and the output."),
    ray_address: Optional[str] = typer.Option(None, help="With --executor ray: an existing cluster (default: a "
                                              "local Ray started for this run)."),
    workers: int = typer.Option(2, min=1, help="With --executor ray: how many workers."),
    batch: bool = typer.Option(False, "--batch", help="A chat: or anthropic: teacher labels through the provider's "
                               "batch API at the batch price (the option batch=true); a rerun resumes its batches."),
) -> None:
    """Label the training split (topped up to --n-train from the validation split, which annotate never uses)
    with a teacher LLM: one row per item with the label, its entropy and the full label distribution p:<label>,
    computed from the model's log-probabilities of each label string."""
    from .assets import cache_dir
    from .cache import AnnotationStore
    from .splits import annotation_split
    from .teachers import Prompt, get_teacher, parse_teacher_uri, sample_demonstrations
    from .teachers.on_ray import annotate_on_ray

    parse_teacher_uri(teacher)
    options = parse_options(option or [], example="p_s_method=top_logprobs")
    if batch:
        options["batch"] = True
    if out.suffix.lower() not in (".parquet", ".csv", ".jsonl"):
        raise SilverlabelError(f"--out {out}: use a .parquet, .csv or .jsonl file name")
    ds = _load(data, text_column, label_column, id_column, task)
    train = annotation_split(ds, n_train=n_train, n_test=n_test, seed=0)
    if k > len(train):  # demonstrations come from the training items; say which limit left too few
        why = (f"--n-train {n_train} caps them; pass a larger --n-train" if len(train) == n_train else
               f"the test split (--n-test {n_test}) took {n_test} of the {len(ds)} rows of {data}; pass a smaller "
               "--n-test")
        raise SilverlabelError(f"--k {k} demonstrations but only {len(train)} training items: {why}, or --k "
                               f"{len(train)} or fewer")
    demos = sample_demonstrations(train.texts, train.labels, train.label_names, k=k, seed=demo_seed,
                                  balanced=balanced)
    prompt = Prompt(task=ds.task, label_names=tuple(ds.label_names), demonstrations=demos)
    store = AnnotationStore(cache or cache_dir() / "annotations.sqlite")
    if dry_run:
        t = get_teacher(teacher, chat=not raw_prompt, **options)  # loads nothing; an openai teacher probes its server
        try:
            spend = t.estimate_spend(train.texts, prompt) if hasattr(t, "estimate_spend") else None
            cached = t.cached_count(train.texts, prompt, store)
        finally:
            t.close()
            store.close()
        chars = sum(len(prompt.render(t)) for t in train.texts)
        console.rule("first prompt (before the chat template)")
        console.print(prompt.render(train.texts[0]), markup=False, highlight=False)
        console.rule()
        console.print(f"items: {len(train)}; calls: {len(train) - cached} label scorings (one per uncached item, "
                      f"{len(ds.label_names)} labels each); prompt tokens ≈ {chars // 4} (4 characters a token, "
                      f"before prefix reuse); cached: {cached}")
        if spend is not None:
            print_spend_estimate(spend, cached)
        return
    check_writable(out.parent)
    if executor not in ("local", "ray"):
        raise SilverlabelError(f"--executor {executor}: choose local or ray")
    try:
        if executor == "ray":
            s = annotate_on_ray(teacher, {"chat": not raw_prompt, **options}, train.items, train.texts, prompt,
                                store=store, out=out, gold=train.labels, workers=workers, address=ray_address)
        else:
            t = get_teacher(teacher, chat=not raw_prompt, **options)
            try:  # streamed to the file chunk by chunk: memory stays flat however large the split
                s = t.annotate_to(out, train.items, train.texts, prompt, store=store, gold=train.labels)
            finally:
                t.close()
    finally:
        store.close()
    accuracy = "n/a" if s.accuracy is None else f"{100 * s.accuracy:.1f} %"
    macro_f1 = "n/a" if s.macro_f1 is None else f"{100 * s.macro_f1:.1f} %"
    console.print(f"{s.items} items ({s.cached} cached, {s.labelled} labelled, {s.failed} failed) in "
                  f"{s.seconds:.1f} s ({s.items_per_s:.2f} items/s); prompt tokens {s.prompt_tokens}; labels "
                  f"{', '.join(f'{n} {c}' for n, c in s.label_counts.items())}; accuracy vs gold {accuracy}, "
                  f"macro-F1 {macro_f1}", highlight=False, soft_wrap=True)  # a log line: never cut inside a number
    print_annotation_summary(s, teacher)
    console.print(f"wrote {out}")


@app.command()
def batches(
    cache: Optional[Path] = typer.Option(None, help="SQLite annotation cache (default: in the user cache dir)."),
    forget: Optional[str] = typer.Option(None, help="Drop this batch from the cache (one the API does not know); its "
                                         "unanswered requests are submitted again by the next run."),
    all_: bool = typer.Option(False, "--all", help="Also the batches whose results were read."),
) -> None:
    """The provider batches (teacher option batch=true) an annotation cache records: status, counts and age."""
    import time

    from .assets import cache_dir
    from .cache import AnnotationStore

    path = cache or cache_dir() / "annotations.sqlite"
    if not path.is_file():
        raise SilverlabelError(f"--cache {path}: no such annotation cache")
    with AnnotationStore(path) as store:
        if forget is not None:
            if forget not in {b.batch_id for b in store.batches()}:
                raise SilverlabelError(f"--forget {forget}: {path} records no such batch; `silverlabel batches --all` "
                                       "lists them")
            freed = store.forget_batch(forget)
            console.print(f"forgot batch {forget}; {freed} unanswered requests will be submitted again")
            return
        rows = store.batches(open_only=not all_)
    if not rows:
        console.print("no open batches" if not all_ else "no batches")
        return
    print_batches(rows, time.time())


@app.command()
def train(
    data: str = typer.Argument(..., help="Preset name or data file."),
    out: Path = typer.Option(..., "--out", help="Study folder (results.json, predictions.parquet, runs/, "
                             "report); rerunning into it resumes."),
    annotations: Optional[Path] = typer.Option(None, help="Train on teacher labels from this `silverlabel "
                                               "annotate` output instead of gold labels."),
    student: str = typer.Option("auto", help="Student model: 'auto' (RoBERTa-base, the paper's, when the hub is "
                                "reachable; else the shipped MiniLM), 'minilm', a hub name or a local folder."),
    save_model: bool = typer.Option(False, help="Also write each seed's model (safetensors) under OUT/models/."),
    soft_labels: bool = typer.Option(False, help="Train on the teacher's distribution p:<label> (needs "
                                     "--annotations) with a cross-entropy on probabilities."),
    text_column: Optional[str] = typer.Option(None),
    label_column: Optional[str] = typer.Option(None),
    id_column: Optional[str] = typer.Option(None),
    n_train: int = typer.Option(5000, help="Training items (cap)."),
    n_test: int = typer.Option(2000, help="Test items."),
    seeds: str = typer.Option("1,2,3", help="Seeds, comma-separated."),
    epochs: int = typer.Option(3),
    learning_rate: float = typer.Option(2e-5),
    batch_size: int = typer.Option(16),
    max_length: int = typer.Option(128),
) -> None:
    """Fine-tune a student per seed (the paper's recipe by default) and evaluate it on the test split: a study of
    one cell (this dataset, gold or the table's teacher labels, one student, every seed), written to OUT as any
    study is (results.json, predictions.parquet, runs/, the report), so a rerun resumes."""
    from .config import (
        DatasetSpec,
        MitigationSpec,
        StudentSpec,
        StudyConfig,
        TeacherSpec,
    )
    from .study import run_study

    seed_list = _seeds(seeds)
    if soft_labels and annotations is None:
        raise SilverlabelError("--soft-labels needs --annotations (the teacher's p:<label> columns)")
    teachers, sources, mitigations = [], ["gold"], []
    if annotations is not None:
        if not annotations.is_file():
            raise SilverlabelError(f"--annotations {annotations}: no such file")
        # the table teacher refuses p:<label> columns for only some labels; none at all would train on one-hot rows
        if soft_labels and not any(str(c).startswith("p:") for c in read_table(annotations).columns):
            raise SilverlabelError(f"{annotations}: no p:<label> columns for --soft-labels; pass a `silverlabel "
                                   "annotate` output")
        # the table's labels for the training and validation texts; a text it lacks is counted and left out
        # (annotate labels the training split only: the students then keep their last epoch rather than choose
        # one on gold, as in a study: README, Decisions)
        teachers = [TeacherSpec(name="annotations", uri=f"table:{annotations.resolve()}", k_shot=0,
                                max_failed_share=1.0)]
        sources = [] if soft_labels else ["teacher"]
        mitigations = [MitigationSpec(policy="soft", budgets=[0])] if soft_labels else []
    config = StudyConfig(
        name=f"train-{Path(data).stem}", label_sources=sources, teachers=teachers, mitigations=mitigations,
        datasets=[DatasetSpec(source=data, text_column=text_column, label_column=label_column, id_column=id_column,
                              n_train=n_train, n_test=n_test)],
        students=[StudentSpec(model=student, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                              max_length=max_length, save_model=save_model)],
        seeds=seed_list)
    results = run_study(config, out)
    print_study(results, out)


@app.command()
def evaluate(
    table: Path = typer.Argument(..., help="CSV or Parquet with columns item, run, pred, gold (and optionally "
                                 "dataset, label_source, student, size, as in a study's predictions.parquet)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Accuracy and macro-F1 per run (mean and standard deviation with ddof=1), Krippendorff's alpha (nominal;
    runs as coders, items as units), p_unchanged (share of items predicted the same in every run), pairwise churn
    and per-class scores, from a prediction table. A table with any of the columns dataset, label_source, student,
    size (a study's predictions.parquet) is evaluated per group of those columns, one row each, as in Table 1.
    The printed tables are in percent; --json gives fractions in [0, 1]: one object, or with grouping columns an
    object whose "groups" holds one object per group (its grouping values, then the metrics) and whose "group_by"
    names the columns. Alpha is n/a (null) for one run."""
    from .metrics import GROUP_COLUMNS, evaluate_groups, read_prediction_table

    frame = read_prediction_table(table)
    groups = evaluate_groups(frame, source=str(table))
    keys = ("n_items", "n_runs", "accuracy_mean", "accuracy_std", "macro_f1_mean", "macro_f1_std",
            "krippendorff_alpha", "p_unchanged", "pairwise_churn", "per_class")
    by = [c for c in GROUP_COLUMNS if c in frame.columns]
    if as_json:
        if not by:
            ev = groups[0].evaluation.to_dict()
            sys.stdout.write(json.dumps({k: ev[k] for k in keys}) + "\n")
        else:
            rows = [{**{c: g.to_dict()[c] for c in by}, **{k: g.to_dict()[k] for k in keys}} for g in groups]
            sys.stdout.write(json.dumps({"group_by": by, "groups": rows}) + "\n")
    elif not by:
        print_evaluation(groups[0].evaluation.to_dict(), title=str(table))
    else:
        print_groups(groups, by, title=str(table))


@app.command()
def select(
    annotations: Path = typer.Option(..., "--annotations", help="A `silverlabel annotate` output."),
    policy: str = typer.Option("entropy", help="random, entropy, ensemble, confident, learned or soft."),
    budget: str = typer.Option(..., help="Gold labels to spend: a share (0.05 or 5%) or a count (50)."),
    out: Path = typer.Option(..., "--out", help="Items to label: .csv, .jsonl or .json (Label Studio tasks)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="csv, jsonl or labelstudio (default: from --out)."),
    ensemble: Optional[list[Path]] = typer.Option(None, "--ensemble", help="Another teacher run's annotations "
                                                  "(other demonstrations), repeated; for --policy ensemble."),
    labels: Optional[list[Path]] = typer.Option(None, "--labels", help="Labels people already gave, repeated "
                                                "(round 2 of --policy learned)."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Policy option KEY=VALUE, repeated."),
    seed: int = typer.Option(0, help="Seed for random draws."),
    design: Optional[str] = typer.Option(None, help="uniform or active: draw a probability sample instead (each "
                                         "item's inclusion_prob recorded), so the gold labels also give valid "
                                         "estimates (`silverlabel estimate`); active favours uncertain items."),
    floor: float = typer.Option(0.1, help="Uniform share mixed into the active design (keeps weights bounded)."),
    target_width: Optional[float] = typer.Option(None, help="Also print the gold labels a prevalence half-width "
                                                 "needs (with --labels as the pilot: PPI and gold alone)."),
) -> None:
    """Export the items a policy sends for gold, with the teacher's label and distribution as a pre-annotation.
    --policy learned runs in two rounds: its validation set first, the rest once those are labelled."""
    from .mitigations.workflow import select_items, selection_format, write_selection

    selection_format(out, fmt)  # a bad --format is refused before the policy runs
    chosen = select_items(annotations, policy=policy, budget=budget, seed=seed, ensemble=ensemble or [],
                          labels=labels or [], options=parse_options(option or [], example="validation=0.3"),
                          design=design, floor=floor, target_width=target_width)
    paths = write_selection(chosen, out, fmt=fmt)
    console.print(chosen.message)
    console.print(f"wrote {', '.join(map(str, paths))}")


@app.command()
def merge(
    annotations: Path = typer.Option(..., "--annotations", help="The `silverlabel annotate` output."),
    labels: list[Path] = typer.Option(..., "--labels", help="People's labels: CSV/JSONL with item,label or a Label "
                                      "Studio JSON export; repeat for several files."),
    out: Path = typer.Option(..., "--out", help="Training labels (.parquet, .csv, .jsonl) for train --annotations."),
) -> None:
    """Put people's labels in place of the teacher's (checked against the label set) and report how often the
    teacher was wrong on them."""
    from .mitigations.workflow import merge_labels, write_training_labels

    merged = merge_labels(annotations, labels)
    path = write_training_labels(merged.frame, out)
    console.print(merged.summary())
    console.print(f"wrote {path}")


@app.command()
def predict(
    models: list[Path] = typer.Argument(..., help="Model folders (written by train --save-model), or a study "
                                        "folder (every seed of one cell), followed by DATA.", show_default=False),
    data: Path = typer.Argument(..., help="The texts: CSV/TSV/JSONL/Parquet, gzipped too.", show_default=False),
    out: Path = typer.Option(..., "--out", help="Predictions: .csv, .jsonl or .parquet; a rerun after a kill "
                             "continues after the last complete chunk."),
    text_column: Optional[str] = typer.Option(None, help="Column of texts (default: text, sentence, tweet, "
                                              "review or content)."),
    id_column: Optional[str] = typer.Option(None, help="Column of item ids (default: row numbers from 0)."),
    cell: Optional[str] = typer.Option(None, help="With a study folder: the cell whose seeds to use, as "
                                       "dataset|label_source|student|nSIZE."),
    batch_size: int = typer.Option(32, min=1, help="Texts per forward pass (larger is no faster on a CPU: 32 measured "
                                   "best on 2 cores)."),
    chunk_rows: int = typer.Option(4096, min=1, help="Texts per chunk: read, predicted and written together (a "
                                   "kill loses at most one chunk)."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda when there is one)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out (or an unfinished run of other "
                                   "models or data)."),
    executor: str = typer.Option("local", help="local, or ray: Ray Data workers, each loading the students once "
                                 "(a GPU each where the cluster has them)."),
    ray_address: Optional[str] = typer.Option(None, help="With --executor ray: an existing cluster (default: a "
                                              "local one)."),
    workers: int = typer.Option(2, min=1, help="With --executor ray: how many workers."),
) -> None:
    """Label a corpus with saved students: per text the label of the mean probability over the seeds, the mean
    p:<label>, each seed's label, the seeds' agreement and whether they disagree (unstable)."""
    from .corpus import predict as run_predict

    summary = run_predict(models, data, out, text_column=text_column, id_column=id_column, cell=cell,
                          batch_size=batch_size, chunk_rows=chunk_rows, device=device, overwrite=overwrite,
                          executor=executor, executor_options={"address": ray_address, "workers": workers})
    print_predict_summary(summary)


@app.command()
def estimate(
    annotations: list[Path] = typer.Option(..., "--annotations", help="A `silverlabel annotate` output (item, "
                                           "label, p:<label>; text for the student). Repeat it, one per teacher "
                                           "configuration (model, prompt, demonstrations), to decide --hypotheses "
                                           "with each."),
    gold: Path = typer.Option(..., "--gold", help="Gold labels: a `silverlabel merge` output or a CSV/JSONL with "
                              "item,label (an inclusion_prob column, as `select --design` writes, weights them)."),
    data: Optional[Path] = typer.Option(None, "--data", help="A table with an item column and the covariates."),
    estimand: str = typer.Option("prevalence", help="prevalence (every class's share), difference (a class's "
                                 "share between two groups of --covariate), ols or logistic (a class indicator on "
                                 "--covariates)."),
    covariates: Optional[str] = typer.Option(None, help="ols / logistic: numeric columns of --data, "
                                             "comma-separated."),
    covariate: Optional[str] = typer.Option(None, help="difference: the column of --data whose groups are "
                                            "compared."),
    groups: Optional[str] = typer.Option(None, help="difference: its two groups' values, comma-separated (first "
                                         "minus second; default 1,0)."),
    split: Optional[float] = typer.Option(None, help="difference: compare items above this value with the rest."),
    target_class: Optional[str] = typer.Option(None, help="The class whose share or indicator is estimated."),
    hypotheses: Optional[Path] = typer.Option(None, "--hypotheses", help="A TOML file of [[hypotheses]]: each "
                                              "decided by every --annotations file, teacher as truth and PPI++."),
    level: float = typer.Option(0.9, help="Confidence level of the intervals."),
    student: bool = typer.Option(False, "--student/--no-student", help="Also PPI++ with a cross-fitted student "
                                 "(5 MiniLM runs on the gold labels; minutes on a CPU)."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="A `silverlabel predict` output over "
                                               "the annotated items: also PPI++ with the deployed students' mean "
                                               "p:<label> (refused if they saw a gold item)."),
    target_width: Optional[float] = typer.Option(None, help="Half-width you want; prints the gold labels needed "
                                                 "for it, by PPI and by gold alone."),
    seed: int = typer.Option(0, help="Seed of the student's folds and training."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Estimates with confidence intervals from teacher labels plus a gold sample: teacher as truth, gold alone,
    and prediction-powered (PPI++) with the teacher's P_S or a cross-fitted student, with effective sample sizes.
    With --hypotheses, whether each conclusion survives every teacher configuration."""
    from .mitigations.workflow import read_annotations

    frames = [(path, *read_annotations(path)) for path in annotations]
    names = frames[0][2]
    for path, _, other in frames[1:]:
        if other != names:
            raise SilverlabelError(f"{path}: labels {', '.join(other)} differ from {frames[0][0]}'s "
                                   f"({', '.join(names)}); every configuration must label the same classes")
    if hypotheses is not None:
        from .config import load_hypotheses
        from .multiverse import Configuration, evaluate_files

        confs = [Configuration(Path(path).name.split(".")[0], frame, meta={"file": str(path)})
                 for path, frame, _ in frames]
        results = evaluate_files(load_hypotheses(hypotheses), confs, names, gold, data=data)
        if as_json:
            sys.stdout.write(json.dumps({"hypotheses": results}) + "\n")
        else:
            print_hypotheses(results)
        return
    from .estimands import make_estimand
    from .inference import estimate_files

    question = make_estimand(estimand, target_class=target_class, covariate=covariate, split=split,
                             covariates=[c.strip() for c in (covariates or "").split(",") if c.strip()],
                             groups=[g.strip() for g in groups.split(",")] if groups else None)
    for path, records, _ in frames:
        est = estimate_files(records, names, gold, question, annotations=path, data=data, level=level,
                             student=student, target_width=target_width, seed=seed, predictions=predictions)
        if as_json:
            sys.stdout.write(json.dumps(est.to_dict()) + "\n")
        else:
            print_estimates(est, source=str(path) if len(frames) > 1 else None)


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2 (tracebacks only with --debug)."""
    from rich.markup import escape

    # click's exceptions, wherever this typer takes click from (recent typers vendor it as typer._click)
    click = sys.modules[typer.BadParameter.__module__]
    debug = "--debug" in sys.argv[1:] or os.environ.get("SILVERLABEL_DEBUG") == "1"
    err = Console(stderr=True)
    try:
        # not standalone: click would print usage errors as a multi-line box; they become one line here
        code = app(standalone_mode=False)
    except SilverlabelError as exc:
        if debug:
            raise
        # escaped: a path or label like "data[red].csv" is text, not rich markup
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except getattr(click, "NoArgsIsHelpError", ()) as exc:  # a bare group: its help, as click does
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        if debug:
            raise
        where = exc.ctx.command_path if exc.ctx is not None else "silverlabel"
        err.print(f"[bold red]error:[/] {escape(exc.format_message().rstrip('.'))}; see {escape(where)} --help",
                  highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (OSError, sqlite3.OperationalError) as exc:
        # a full disk or a folder made read-only mid-run: the user's to fix, not a bug; anything else is a bug
        full = isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS or \
            any(s in str(exc) for s in ("disk is full", "readonly database", "disk I/O error"))
        if debug or not full:
            raise
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f"{exc.filename}: " if isinstance(exc, OSError) and exc.filename else ""
        err.print(f"[bold red]error:[/] {escape(where + what)}; free some space or fix the permissions (or choose "
                  "another --out), then rerun: finished work is kept", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted; finished work is kept and a rerun resumes from it")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
