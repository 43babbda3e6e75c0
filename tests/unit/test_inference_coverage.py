"""The intervals are valid on real data: coverage of nominal 90 % intervals over repeated gold samples of the stored
teacher labels (bench/data/coverage-teacher.parquet: the shipped 0.5B teacher on the toxic tweets and the imdb
stand-in), fewer draws than bench/coverage.py, each coverage within a binomial tolerance of the benchmark's 4000-draw coverage (docs/benchmarks.md). The file's sha256 is checked; tests/integration/test_coverage_data.py recomputes
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


COMBOS = [(name, design) for name in ("toxic", "imdb") for design in ("uniform", "active")]
METHODS = ("ppi_teacher", "classical")


def claimed() -> dict:
    """The claim: bench/coverage.py's 4000-draw coverage per (dataset, design, method, class) at n = 200 in the
    superpopulation frame, as docs/benchmarks.md records it (the README's table is the same run)."""
    root = DATA.parents[2]
    out = {}
    for line in (root / "docs" / "benchmarks.md").read_text().splitlines():
        if line.startswith('{"dataset"'):
            row = json.loads(line)
            if row.get("n") == 200 and row.get("frame") == "superpopulation" and row.get("draws") == 4000:
                for method in METHODS:
                    for cls, cov in row["coverage"][method].items():
                        out[(row["dataset"], row["design"], method, cls)] = (cov, row["draws"])
    return out


@pytest.fixture(scope="module")
def measured(stored):
    frame, meta = stored
    out = {}
    for name, design in COMBOS:
        sub = frame[frame["dataset"] == name].reset_index(drop=True)
        names = meta["datasets"][name]["label_names"]
        res = coverage(*dataset_arrays(sub, names), names, n=200, design=design, draws=DRAWS, seed=11)
        for method in METHODS:
            for cls, cov in res["coverage"][method].items():
                out[(name, design, method, cls)] = cov
    return out


def test_each_cell_covers_as_the_benchmark_claims(measured):
    claim = claimed()
    assert set(claim) == set(measured)  # every cell has its claim
    for key, cov in measured.items():
        c, n_claim = claim[key]
        if key[2] == "ppi_teacher":  # the claim itself is near nominal (README: PPI++ covers at 0.864-0.897)
            assert 0.86 <= c <= 0.92, key
        # the difference of two binomial shares, 150 and 4000 draws: sd = sqrt(c(1-c)(1/150 + 1/4000)) ~ 0.025;
        # 3.5 sd either side
        tol = 3.5 * math.sqrt(c * (1 - c) * (1 / DRAWS + 1 / n_claim))
        assert abs(cov - c) <= tol, (key, cov, c, tol)


def test_pooled_coverage_matches_the_claim_within_a_third_of_the_per_cell_tolerance(measured):
    """One cell of 150 draws resolves coverage to +-0.086 only; pooled over the 4 (dataset, design) runs it is
    ~2x finer. A bound that holds however the classes of one draw correlate: each run's class-average is a mean of
    150 draws of a variable in [0, 1] with variance at most c(1-c), so over 4 independent runs sd <=
    sqrt(0.09 / 600) = 0.012, and 3.5 sd = 0.043 (the claims' own sd, 4000 draws a cell, adds < 0.001). Intervals
    12 % too narrow (z 1.45 for 1.645) cover ~0.85 and fail it; the exact widths are checked against ppi_py in
    test_inference.py and tests/integration/test_estimate_cli.py."""
    claim = claimed()
    for method in METHODS:
        keys = [k for k in measured if k[2] == method]
        got = np.mean([np.mean([measured[k] for k in keys if k[:2] == combo]) for combo in COMBOS])
        want = np.mean([np.mean([claim[k][0] for k in keys if k[:2] == combo]) for combo in COMBOS])
        assert abs(got - want) <= 3.5 * math.sqrt(0.09 / (4 * DRAWS)), (method, got, want)
