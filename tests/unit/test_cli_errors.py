"""Error paths of `study report`, `estimate`, `select` and `merge`, and the dataset-preset registry: each bad input is
one line on stderr naming the flag, file or item and what to do, with exit code 2 and nothing written. Run
in-process through the CLI's real entry point (`silverlabel.cli.main`), which is what the console script calls;
the subprocess round trips are in tests/integration/test_estimate_cli.py and test_bad_inputs.py."""

import json

import pandas as pd
import pytest

from silverlabel.data import PRESETS, Preset, load_dataset, register_preset
from silverlabel.errors import SilverlabelError
from tests.helpers import cli_in_process
from tests.synthetic_teacher import synthetic_teacher


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("errors")
    records, gold, names, _ = synthetic_teacher(200, seed=7)
    records.to_parquet(tmp / "ann.parquet", index=False)
    labelled = records[records["label"].notna()].head(40)
    pd.DataFrame({"item": labelled["item"], "label": [gold[i] for i in labelled.index]}).to_csv(
        tmp / "gold.csv", index=False)
    pd.read_csv(tmp / "gold.csv").head(8).to_csv(tmp / "gold8.csv", index=False)
    (tmp / "empty").mkdir()
    return tmp, names


def _run(monkeypatch, *args) -> tuple[int, str]:
    r = cli_in_process(monkeypatch, *args)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(("WARNING ", "INFO "))]
    return r.returncode, lines[-1] if lines else ""


ESTIMATE = ("estimate", "--annotations", "{tmp}/ann.parquet", "--gold", "{tmp}/gold.csv")
SELECT = ("select", "--annotations", "{tmp}/ann.parquet", "--out", "{tmp}/out/s.csv")
CASES = [
    ("report-without-results", ("study", "report", "{tmp}/empty"), "no results.json; run `silverlabel study run"),
    ("level-above-1", (*ESTIMATE, "--level", "1.5"), "level must be in (0, 1), e.g. 0.9, got 1.5"),
    ("level-0", (*ESTIMATE, "--level", "0"), "level must be in (0, 1)"),
    ("unknown-estimand", (*ESTIMATE, "--estimand", "median"),
     "estimand 'median' is unknown; choose one of difference, prevalence, ols, logistic"),
    ("ols-without-target", (*ESTIMATE, "--estimand", "ols", "--covariates", "x"), "estimand 'ols' needs target_class"),
    ("unknown-target-class", (*ESTIMATE, "--estimand", "logistic", "--target-class", "nope", "--covariates", "x"),
     "logistic: target_class 'nope' is not one of the labels"),
    ("target-class-typo-with-prevalence", (*ESTIMATE, "--target-class", "nope"),
     "prevalence: target_class 'nope' is not one of the labels"),
    ("student-with-8-gold", ("estimate", "--annotations", "{tmp}/ann.parquet", "--gold", "{tmp}/gold8.csv",
                             "--student"), "cross-fitting a student over 5 folds needs at least 10 gold labels"),
    ("unknown-policy", (*SELECT, "--budget", "10", "--policy", "magic"), "unknown policy 'magic'; choose one of"),
    ("budget-not-a-number", (*SELECT, "--budget", "lots"), "budget 'lots' is not a number"),
    ("budget-above-100%", (*SELECT, "--budget", "150%"), "budget '150%' is above 100 % of the items"),
    ("budget-0", (*SELECT, "--budget", "0"), "--budget 0 selects no items of 200"),
    ("unknown-design", (*SELECT, "--budget", "10", "--design", "stratified"),
     "design 'stratified' is unknown; choose one of uniform, active"),
    ("unknown-format", (*SELECT, "--budget", "10", "--format", "xlsx"),
     "--format xlsx is unknown; choose csv, jsonl or labelstudio"),
    ("no-format-from-name", ("select", "--annotations", "{tmp}/ann.parquet", "--out", "{tmp}/out/s.txt",
                             "--budget", "10"), "s.txt: give --format csv, jsonl or labelstudio"),
]


@pytest.mark.parametrize("name, args, expect", CASES, ids=[c[0] for c in CASES])
def test_bad_flag_is_one_line_with_exit_2(files, monkeypatch, name, args, expect):
    tmp, _ = files
    code, line = _run(monkeypatch, *(a.replace("{tmp}", str(tmp)) for a in args))
    assert code == 2 and line.startswith("error: ") and expect in line, (code, line)
    assert not (tmp / "out").exists()  # nothing written


LABEL_STUDIO = {
    "not-json": ('[{"id": 1, "data": {"item": "x"}', "not valid JSON"),
    "no-item": ([{"id": 7, "data": {"text": "t"}, "annotations": []}], "task 7 has no data.item"),
    "two-choices": ([{"id": 1, "data": {"item": "{item}"},
                      "annotations": [{"result": [{"value": {"choices": ["{a}", "{b}"]}}]}]}],
                    "item '{item}' has 2 choices"),
    "submitted-without-a-choice": ([{"id": 3, "data": {"item": "{item}"}, "annotations": [{"result": []}]}],
                                   "item '{item}' (task 3) was submitted without a choice"),
    "unknown-choice": ([{"id": 1, "data": {"item": "{item}"},
                         "annotations": [{"result": [{"value": {"choices": ["maybe"]}}]}]}],
                       "item '{item}' has label 'maybe', which is not one of the allowed labels"),
}


@pytest.mark.parametrize("case", LABEL_STUDIO)
def test_a_malformed_label_studio_export_is_refused_by_merge(files, monkeypatch, case):
    tmp, names = files
    item = str(pd.read_parquet(tmp / "ann.parquet")["item"].iloc[0])
    body, expect = LABEL_STUDIO[case]
    text = body if isinstance(body, str) else json.dumps(body)
    text = text.replace("{item}", item).replace("{a}", names[0]).replace("{b}", names[1])
    path = tmp / f"ls-{case}.json"
    path.write_text(text)
    code, line = _run(monkeypatch, "merge", "--annotations", tmp / "ann.parquet", "--labels", path,
                      "--out", tmp / "out" / "m.parquet")
    assert code == 2 and str(path) in line and expect.replace("{item}", item) in line, (code, line)
    assert not (tmp / "out").exists()
    # the cancelled (skipped) task is not an error: it is simply not labelled yet
    path.write_text(json.dumps([{"id": 3, "data": {"item": item}, "annotations": [{"was_cancelled": True,
                                                                                    "result": []}]}]))
    code, _ = _run(monkeypatch, "merge", "--annotations", tmp / "ann.parquet", "--labels", path,
                   "--out", tmp / "skipped.parquet")
    assert code == 0 and (pd.read_parquet(tmp / "skipped.parquet")["label_source"] != "human").all()


def test_a_registered_preset_loads_its_real_source_and_refuses_offline_without_a_stand_in(monkeypatch):
    rows = pd.DataFrame({"text": [f"text {i}" for i in range(12)], "label": ["yes", "no", "maybe"] * 4})
    calls = []

    def loader():
        calls.append(1)
        return rows

    monkeypatch.setitem(PRESETS, "mine", None)  # restored after the test; register_preset replaces it
    preset = register_preset(Preset(name="mine", paper_dataset="mine", task="Is it yes, no or maybe?",
                                    label_names=("yes", "no", "maybe"), real_loader=loader, real_source="my loader"))
    assert PRESETS["mine"] is preset
    ds = load_dataset("mine", offline=False)
    assert calls == [1] and ds.texts == rows["text"].tolist()
    assert [ds.label_names[i] for i in ds.labels] == rows["label"].tolist()  # the preset's label order kept
    assert ds.label_names == ["yes", "no", "maybe"] and ds.provenance.real and ds.task == "Is it yes, no or maybe?"
    with pytest.raises(SilverlabelError, match="dataset preset 'mine': offline and no shipped stand-in"):
        load_dataset("mine", offline=True)
    assert calls == [1]  # offline never calls the loader

    def broken():
        raise OSError("cannot connect")

    register_preset(Preset(name="mine", paper_dataset="mine", task="t", label_names=("yes", "no"),
                           real_loader=broken, real_source="my loader"))
    with pytest.raises(SilverlabelError, match="its real source failed"):
        load_dataset("mine", offline=False)


def test_estimate_through_the_cli_leaves_demonstrations_out(files, monkeypatch):
    """README: demonstrations leave the estimate (their teacher label saw their gold label), through the CLI too."""
    tmp, _ = files
    ann = pd.read_parquet(tmp / "ann.parquet")
    gold = pd.read_csv(tmp / "gold.csv")
    ann["demo"] = ann["item"].isin(gold["item"].astype(str).head(3))  # three of the gold items were demonstrations
    ann.to_parquet(tmp / "ann-demo.parquet", index=False)
    r = cli_in_process(monkeypatch, "estimate", "--annotations", tmp / "ann-demo.parquet", "--gold", tmp / "gold.csv",
                       "--json")
    out = json.loads(r.stdout)
    labelled = int(ann["label"].notna().sum())
    assert r.returncode == 0, r.stderr
    assert out["excluded_demos"] == 3 and out["n_items"] == labelled - 3 and out["n_gold"] == len(gold) - 3
