"""The student registry is the way in: a trainer registered under a name trains a study's cells, and an
unknown backend is refused before any work."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import silverlabel
from silverlabel.config import StudyConfig
from silverlabel.errors import SilverlabelError
from silverlabel.students import STUDENTS, StudentRun, register_student
from silverlabel.study import grid_cells, prepare_dataset, run_study
from tests.helpers import require

SEEN = {}


def _pipeline(seed):
    return make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=200, random_state=seed))


@pytest.fixture
def tfidf():
    @register_student("tfidf-logreg")
    def train(texts, targets, *, num_labels, config, seed, test_texts=(), **_):
        SEEN[seed] = (list(texts), np.asarray(targets))
        model = _pipeline(seed).fit(list(texts), targets)
        probs = np.zeros((len(test_texts), num_labels))
        probs[:, model.classes_] = model.predict_proba(list(test_texts))
        return StudentRun(seed=seed, preds=probs.argmax(1), probs=probs, steps=1)

    yield "tfidf-logreg"
    STUDENTS.pop("tfidf-logreg")


def _config(backend):
    return StudyConfig.from_dict({
        "name": "reg", "seeds": [1, 2], "label_sources": ["gold"], "bootstrap": 10,
        "datasets": [{"source": "toxic", "n_train": 60, "n_test": 40}],
        "students": [{"name": "s", "backend": backend}]})


def test_a_registered_student_trains_the_study(tfidf, tmp_path):
    assert silverlabel.register_student is register_student  # the hook is public
    config = _config(tfidf)
    run_study(config, tmp_path, offline=True, report=False)
    preds = pd.read_parquet(tmp_path / "predictions.parquet")
    prep = prepare_dataset(config.datasets[0], sizes=None, offline=True)
    names = prep.splits.test.label_names
    for seed in (1, 2):
        texts, targets = SEEN[seed]
        assert texts == [prep.splits.train.texts[i] for i in prep.training_positions(60)]
        want = _pipeline(seed).fit(texts, targets).predict(prep.splits.test.texts)  # sklearn on its own
        got = preds[preds["seed"] == seed].set_index("item").loc[prep.splits.test.items, "pred"]
        assert got.tolist() == [names[i] for i in want]
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/run.json")]
    assert len(records) == 2 and {r["train_config"]["backend"] for r in records} == {tfidf}


def test_an_unknown_student_backend_is_refused_before_any_work(tmp_path):
    config = _config("no-such-trainer")
    with pytest.raises(SilverlabelError, match="student backend 'no-such-trainer' is unknown; choose one of"):
        run_study(config, tmp_path / "out", offline=True, report=False)
    assert not (tmp_path / "out" / "runs").exists() and not (tmp_path / "out" / "annotations.sqlite").exists()


def test_the_default_backend_keeps_the_run_ids_of_recipes_that_never_named_it():
    implicit = StudyConfig.from_dict({"datasets": [{"source": "toxic", "n_train": 60, "n_test": 40}],
                                      "label_sources": ["gold"], "students": [{"name": "s"}]})
    explicit = StudyConfig.from_dict({**implicit.to_dict(), "students": [{"name": "s", "backend": "hf"}]})
    prepared = {d.key: prepare_dataset(d, sizes=None, offline=True) for d in implicit.datasets}
    assert [c.run_id for c in grid_cells(implicit, prepared)] == [c.run_id for c in grid_cells(explicit, prepared)]


def test_a_student_registered_in_the_driver_trains_in_ray_workers(tfidf, tmp_path):
    """A Ray worker imports silverlabel afresh, so its registry lacks what the driver registered; the trainer
    travels with each run's payload instead. The one Ray test on a Ray the product starts itself (`--executor ray`
    on a laptop, no address); the others join a cluster started for them (conftest.py's ray_cluster)."""
    require("ray", "pip install 'silverlabel[ray]'")
    config = StudyConfig.from_dict({**_config(tfidf).to_dict(), "seeds": [1]})
    run_study(config, tmp_path, offline=True, report=False, executor="ray", executor_options={"cpus_per_run": 1})
    preds = pd.read_parquet(tmp_path / "predictions.parquet")
    prep = prepare_dataset(config.datasets[0], sizes=None, offline=True)
    texts = [prep.splits.train.texts[i] for i in prep.training_positions(60)]
    targets = prep.splits.train.labels[prep.training_positions(60)]
    want = _pipeline(1).fit(texts, targets).predict(prep.splits.test.texts)
    got = preds.set_index("item").loc[prep.splits.test.items, "pred"]
    assert got.tolist() == [prep.splits.test.label_names[i] for i in want]
