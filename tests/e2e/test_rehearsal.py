"""A small rehearsal of the paper's protocol as a user runs it (the CLI in a subprocess): two teachers (one with
two demonstration sets), two student recipes, the paper's two mitigations, on the imdb stand-in. The ensemble's
teacher is Qwen2.5-0.5B: SmolLM2 with these short prompts gives every text the same label (every tweet hate
speech, every snippet positive), so its demonstration sets never disagree and there would be nothing to check.
Table 2 in
results.json and in the report is checked against the predictions and teacher tables on disk, recomputed with
scikit-learn and the krippendorff package, and the gold each mitigation spent against the teacher tables."""

import json
import re
import subprocess
import sys

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from tests.helpers import require_study_assets

pytestmark = [pytest.mark.slow, pytest.mark.ci]

N_TRAIN = 36  # 40 took ~10 % longer; 25 % of it is a whole number of items (the entropy budget)
# qwen with one demonstration per set (two took 4 s more of labelling on one core): its two sets still disagree on
# 4 of the 36 items, so the ensemble spends gold; the gold rows, which carry the alpha check, do not depend on it
CONFIG = """
name = "ci-rehearsal"
seeds = [1, 2]
label_sources = ["gold", "teacher"]
bootstrap = 100

[[datasets]]
source = "imdb"
n_train = {n_train}
n_test = 60

[[teachers]]
name = "qwen"
uri = "llamacpp:qwen2.5-0.5b"
k_shot = 1
demo_seeds = [0, 1]

[[teachers]]
name = "smol"
uri = "llamacpp:smollm2-135m"
k_shot = 1

[[students]]
name = "minilm-2ep"
model = "minilm"
epochs = 2
learning_rate = 5e-4
max_length = 48

[[students]]
name = "minilm-1ep"
model = "minilm"
epochs = 1
learning_rate = 3e-4
max_length = 48

[[mitigations]]
policy = "entropy"
teacher = "qwen"
budgets = [0.25]

[[mitigations]]
policy = "ensemble"
teacher = "qwen"
budgets = [1.0]
options = { fill = "none" }
"""

ENTROPY, ENSEMBLE = "entropy@25%:qwen", "ensemble[fill=none]@100%:qwen"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    require_study_assets()
    root = tmp_path_factory.mktemp("rehearsal")
    config = root / "ci.toml"
    config.write_text(CONFIG.replace("{n_train}", str(N_TRAIN)))  # the TOML has braces of its own
    out = root / "out"
    done = subprocess.run([sys.executable, "-m", "silverlabel.cli", "study", "run", str(config), "--out", str(out)],
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_grid_has_every_teacher_student_and_mitigation(study):
    _, res = study
    rows = res["results"]
    assert {(r["student"], r["label_source"]) for r in rows} == {
        (s, src) for s in ("minilm-2ep", "minilm-1ep")
        for src in ("gold", "teacher:qwen", "teacher:smol", ENTROPY, ENSEMBLE)}
    assert sorted((t["teacher"], t["demo_seed"]) for t in res["teachers"]) == [
        ("qwen", 0), ("qwen", 1), ("smol", 0)]


def test_table2_numbers_match_the_predictions_on_disk(study):
    out, res = study
    # alpha is checked only where runs predict more than one class and differ; at this size the students of the
    # teacher-labelled rows may all collapse to one class, the gold rows do not
    assert any(not r["one_class"] and r["p_unchanged"] < 1 for r in res["results"])
    preds = pd.read_parquet(out / "predictions.parquet")
    report = (out / "report.md").read_text()
    table2 = report[report.index("Table 2 ("):report.index("What each policy spent")]
    for r in res["results"]:  # every row of Table 2: gold and the teachers for reference, then the mitigations
        cell = preds[(preds["label_source"] == r["label_source"]) & (preds["student"] == r["student"])]
        runs = sorted(cell["run"].unique())
        assert len(runs) == 2
        wide = cell.pivot(index="item", columns="run", values="pred")[runs]
        gold = cell.drop_duplicates("item").set_index("item").loc[wide.index, "gold"]
        acc = [accuracy_score(gold, wide[c]) for c in runs]
        f1 = [f1_score(gold, wide[c], average="macro") for c in runs]
        assert r["accuracy_mean"] == pytest.approx(np.mean(acc), abs=1e-9)
        assert r["accuracy_std"] == pytest.approx(np.std(acc, ddof=1), abs=1e-9)
        assert r["macro_f1_mean"] == pytest.approx(np.mean(f1), abs=1e-9)
        assert r["macro_f1_std"] == pytest.approx(np.std(f1, ddof=1), abs=1e-9)
        codes = {n: i for i, n in enumerate(sorted(set(wide.to_numpy().ravel())))}
        matrix = np.array([[codes[v] for v in wide[c]] for c in runs], dtype=float)  # runs as coders, items as units
        unchanged = float((wide.nunique(axis=1) == 1).mean())
        assert r["p_unchanged"] == pytest.approx(unchanged, abs=1e-9)
        if len(codes) > 1:
            alpha = krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
            assert r["krippendorff_alpha"] == pytest.approx(alpha, abs=1e-9)
        if r["student"] == "minilm-2ep":  # the report's Table 2 is drawn for the first student
            row = next(line for line in table2.splitlines() if line.startswith(f"| {r['label_source']} "))
            cols = [c.strip() for c in row.strip("|").split("|")]
            assert cols[1].startswith(f"{100 * np.mean(acc):.2f} [") and cols[2].startswith(f"{100 * np.mean(f1):.2f} [")
            spent = N_TRAIN if r["kind"] == "gold" else r["accounting"].get("gold_used", 0)  # teacher rows spend none
            assert cols[-1] == str(spent)


def test_gold_spent_matches_the_teacher_tables(study):
    out, res = study
    d0 = pd.read_parquet(out / "teachers" / "imdb__qwen__d0.parquet")
    d1 = pd.read_parquet(out / "teachers" / "imdb__qwen__d1.parquet")
    d0, d1 = d0[d0["split"] == "train"].set_index("item"), d1[d1["split"] == "train"].set_index("item")
    d1 = d1.loc[d0.index]
    failed = d0["label"].isna() | d1["label"].isna()
    flipped = int(((d0["label"] != d1["label"]) | failed).sum())
    assert 0 < flipped < N_TRAIN  # the two demonstration sets disagree on some items, so the ensemble spends gold
    for r in res["results"]:
        if r["label_source"] == ENSEMBLE:
            assert r["accounting"]["gold_used"] == flipped and r["accounting"]["budget"] == N_TRAIN
            assert r["accounting"]["extra_teacher_calls"] == len(d1) == N_TRAIN  # the second set's training calls
        if r["label_source"] == ENTROPY:
            assert r["accounting"]["gold_used"] == N_TRAIN // 4  # 25 % of N_TRAIN
            # the paper's rule, recomputed: the N_TRAIN / 4 training items with the highest entropy of P_S get gold
            probs = d0[[c for c in d0.columns if c.startswith("p:")]].to_numpy(float, copy=True)
            failed0 = d0["label"].isna().to_numpy()
            probs[failed0] = 1 / probs.shape[1]  # a failed call counts as a uniform P_S, and goes first
            entropy = -(probs * np.log(np.clip(probs, 1e-300, 1))).sum(axis=1)
            top = set(d0.index[np.lexsort((np.arange(len(d0)), -entropy, ~failed0))[:N_TRAIN // 4]])
            wrong = d0["label"] != d0["gold"]
            assert r["accounting"]["errors_caught"] == int(wrong[list(top)].sum())
        if r["label_source"] in ("gold", ENTROPY, ENSEMBLE):
            assert r["n_train"] == N_TRAIN
    assert re.search(r"\| paper: entropy \|.*\| not stated \|", (out / "report.md").read_text())
