"""The one temporary-name scheme: every writer's in-flight file or folder is recognised and removed on restart."""

import os

import pandas as pd
import pytest

from silverlabel.files import (
    atomic_folder,
    atomic_save_npy,
    atomic_write_parquet,
    atomic_write_text,
    is_temp_name,
    remove_stale_temp,
    write_frames,
)


def _in_flight(folder, target):
    """Names in ``folder`` other than ``target`` while a writer is mid-way."""
    return [p.name for p in folder.iterdir() if p.name != target]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_streamed_tables_write_under_a_name_restart_removes(tmp_path, suffix):
    seen = []

    def frames():
        yield pd.DataFrame({"item": ["a"], "label": ["x"]})
        seen.extend(_in_flight(tmp_path, f"t{suffix}"))
        yield pd.DataFrame({"item": ["b"], "label": [None]})

    write_frames(tmp_path / f"t{suffix}", frames(), empty=pd.DataFrame({"item": [], "label": []}))
    assert len(seen) == 1 and is_temp_name(seen[0]) and seen[0].startswith(f".t{suffix}.")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"t{suffix}"]


def test_every_writer_uses_names_that_restart_removes(tmp_path, monkeypatch):
    """Kill each writer just before its rename (os.replace never happens): what it leaves is a temporary name,
    and remove_stale_temp deletes it and nothing else."""
    import numpy as np

    (tmp_path / "keep.txt").write_text("finished")
    (tmp_path / ".hidden-but-mine").write_text("not a temporary file")

    def killed(src, dst):
        raise SystemExit("killed")

    monkeypatch.setattr(os, "replace", killed)
    writers = [lambda: atomic_write_text(tmp_path / "a.json", "{}"),
               lambda: atomic_write_parquet(pd.DataFrame({"x": [1]}), tmp_path / "b.parquet"),
               lambda: atomic_save_npy(tmp_path / "c.npy", np.zeros(3))]
    for write in writers:
        with pytest.raises(SystemExit):
            write()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden-but-mine", "keep.txt"]  # cleaned up
    # a killed process does not clean up: plant what each would have left, by the writers' own scheme
    monkeypatch.undo()
    from silverlabel.files import temp_path

    left = [temp_path(tmp_path / n) for n in ("a.json", "b.parquet", "c.npy", "x.parquet")]
    for p in left:
        p.write_text("half")
    run = temp_path(tmp_path / "0123abcd")
    run.mkdir()
    (run / "predictions.parquet").write_text("half")
    assert all(is_temp_name(p.name) for p in [*left, run])
    assert remove_stale_temp(tmp_path) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden-but-mine", "keep.txt"]


def test_interrupted_writers_leave_nothing_and_keep_the_old_file(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")

    def boom():
        yield pd.DataFrame({"item": ["a"]})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_frames(tmp_path / "r.csv", boom(), empty=pd.DataFrame({"item": []}))
    with pytest.raises(ZeroDivisionError):
        with atomic_folder(tmp_path / "run") as tmp:
            (tmp / "run.json").write_text("{}")
            1 / 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"] and target.read_text() == "old"


def test_atomic_folder_replaces_an_unfinished_folder(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "stale.txt").write_text("from a run without run.json")
    with atomic_folder(tmp_path / "run") as tmp:
        (tmp / "run.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["run.json"]


def test_a_rewrite_removes_what_a_killed_write_of_that_file_left(tmp_path):
    from silverlabel.files import temp_path

    mine, other = temp_path(tmp_path / "a.parquet"), temp_path(tmp_path / "b.parquet")
    mine.write_text("half")
    other.write_text("another writer's")
    write_frames(tmp_path / "a.parquet", iter([pd.DataFrame({"item": ["x"]})]), empty=pd.DataFrame({"item": []}))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.parquet", other.name])


def test_a_model_file_is_hashed_once_until_it_changes(tmp_path, monkeypatch):
    import hashlib
    import time

    from silverlabel import assets

    path = tmp_path / "m.gguf"
    path.write_bytes(b"weights" * 1000)
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: (reads.append(str(f)), real_open(f, *a, **k))[1])
    first = assets.sha256_file(path)
    assert first == assets.sha256_file(path) == hashlib.sha256(b"weights" * 1000).hexdigest()
    assert reads.count(str(path.resolve())) == 1
    time.sleep(0.01)
    path.write_bytes(b"other weights")
    assert assets.sha256_file(path) == hashlib.sha256(b"other weights").hexdigest()
    assert reads.count(str(path.resolve())) == 2


def test_a_folder_of_run_folders_loses_every_hidden_leftover(tmp_path):
    (tmp_path / "run-a").mkdir()
    (tmp_path / ".run-b.partial").mkdir()  # an older version's temporary run folder
    (tmp_path / ".run-c.1a2b3c4d.tmp").mkdir()
    assert remove_stale_temp(tmp_path) == 1 and (tmp_path / ".run-b.partial").exists()
    assert remove_stale_temp(tmp_path, any_hidden=True) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run-a"]
