"""The intervals are valid on real data: coverage of nominal 90 % intervals over repeated gold samples of the stored
teacher labels (bench/data/coverage-teacher.parquet: the shipped 0.5B teacher on the toxic tweets and the imdb
stand-in), fewer draws than bench/coverage.py, each coverage within a binomial tolerance of 0.90. The file's sha256 is checked; tests/integration/test_coverage_data.py recomputes
some of its items with the real teacher."""

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest

from bench.coverage import DATA, META, coverage, dataset_arrays

DRAWS = 150


@pytest.fixture(scope="module")
def stored():
    meta = json.loads(META.read_text())
    assert hashlib.sha256(DATA.read_bytes()).hexdigest() == meta["sha256"]
    return pd.read_parquet(DATA), meta


def test_the_stored_labels_are_what_the_metadata_says(stored):
    frame, meta = stored
    assert set(frame["dataset"]) == set(meta["datasets"]) == {"toxic", "imdb"}
    for name, info in meta["datasets"].items():
        sub = frame[frame["dataset"] == name]
        assert len(sub) == meta["n_items"] and sub["item"].is_unique
        probs = sub[[f"p:{n}" for n in info["label_names"]]].to_numpy()
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-6)
        assert set(sub["gold"]) <= set(info["label_names"])
        assert (sub["label"] == sub["gold"]).mean() == pytest.approx(info["accuracy"])


@pytest.mark.parametrize("name", ["toxic", "imdb"])
@pytest.mark.parametrize("design", ["uniform", "active"])
def test_ppi_and_classical_cover_at_the_nominal_rate(stored, name, design):
    frame, meta = stored
    sub = frame[frame["dataset"] == name].reset_index(drop=True)
    names = meta["datasets"][name]["label_names"]
    res = coverage(*dataset_arrays(sub, names), names, n=200, design=design, draws=DRAWS, seed=11)
    # 150 draws: a binomial sd of sqrt(0.09 / 150) = 0.025 around 0.90; 3.5 sd either side
    tol = 3.5 * math.sqrt(0.9 * 0.1 / DRAWS)
    for method in ("ppi_teacher", "classical"):
        for cls, cov in res["coverage"][method].items():
            assert abs(cov - 0.9) <= tol, (method, cls, cov)
