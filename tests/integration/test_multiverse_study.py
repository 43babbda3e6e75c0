"""A multiverse study as a user runs it (the CLI in a subprocess, the shipped SmolLM2-135M on llama.cpp): one
teacher with two instruction variants (one read from a prompt file) x two demonstration sets = four configurations,
two [[hypotheses]] decided by each, no student runs. Every interval is checked against a reference computed here
from the teacher tables the study wrote (closed-form Wald intervals with scipy, PPI++ with ppi_py on the same gold
draw), the report's section and figure, the rerun that labels nothing, and the config errors."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import ppi_py
import pytest
from scipy.stats import norm

from tests.helpers import cli_in_process, require

CONFIG = """
name = "multiverse-tiny"
label_sources = []

[[datasets]]
source = "toxic"
n_train = 24
n_test = 10
n_validation = 3

[[teachers]]
name = "smol"
uri = "llamacpp:smollm2-135m"
k_shot = 1
demo_seeds = [0, 1]
[teachers.instructions]
paper = "{task}"
plain = "@prompts/plain.txt"

[[hypotheses]]
name = "hate-above-5pct"
estimand = "prevalence"
target_class = "hate speech"
threshold = 0.05
level = 0.9
gold_size = 16
draws = 4

[[hypotheses]]
name = "mentions-offend-more"
estimand = "difference"
target_class = "offensive language"
covariate = "contains:@"
level = 0.9
gold_size = 16
draws = 4
"""
# 24 training and 3 validation items (one per class, the fewest a stratified split takes) are what each of the
# four configurations labels (no student trains), with one demonstration per set: measured on one core, 47 s for
# the study where 30 + 3 items and two demonstrations took 60 s (24 items at two demonstrations took 57 s: that
# split drew longer ones, 426 prompt tokens an item against 210). The two demonstration sets still differ (four
# prompts, checked below). At most 2 of the 24 are demonstrations, which no configuration's estimate uses, so at
# least 22 items remain for the 16 gold items a draw takes.
GOLD_SIZE = 16
PLAIN = "Decide whether the tweet is hate speech, offensive language, or neither."


def cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "silverlabel.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    tmp = tmp_path_factory.mktemp("multiverse")
    (tmp / "prompts").mkdir()
    (tmp / "prompts" / "plain.txt").write_text(PLAIN + "\n", encoding="utf-8")
    (tmp / "study.toml").write_text(CONFIG, encoding="utf-8")
    out = tmp / "out"
    r = cli("study", "run", str(tmp / "study.toml"), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, out, json.loads((out / "results.json").read_text())


def teacher_table(out, name, seed):
    slug = name.replace("/", "-")
    frame = pd.read_parquet(out / "teachers" / f"toxic__{slug}__d{seed}.parquet")
    return frame[frame["split"] == "train"].reset_index(drop=True)


CONFIGS = {"smol/d0": ("smol", 0), "smol/d1": ("smol", 1), "smol/plain/d0": ("smol/plain", 0),
           "smol/plain/d1": ("smol/plain", 1)}


def test_every_configuration_is_labelled_with_its_own_prompt(study):
    tmp, out, results = study
    assert [h["name"] for h in results["hypotheses"]] == ["hate-above-5pct", "mentions-offend-more"]
    for h in results["hypotheses"]:
        assert [c["name"] for c in h["configurations"]] == list(CONFIGS)
        assert {c["instruction"] for c in h["configurations"]} == {"paper", "plain"}
    prompts = {name: teacher_table(out, *where)["prompt"].unique().tolist() for name, where in CONFIGS.items()}
    assert all(len(p) == 1 for p in prompts.values())
    assert len({p[0] for p in prompts.values()}) == 4  # instruction x demonstrations: four different prompts
    recorded = json.loads((out / "config.json").read_text())["teachers"][0]["instructions"]
    assert recorded == {"paper": "{task}", "plain": PLAIN}  # the file's text is what the run records


def _wald(share, n, level):
    z = norm.ppf(1 - (1 - level) / 2)
    half = z * math.sqrt(share * (1 - share) / n)
    return share - half, share + half


def test_intervals_and_decisions_against_references_computed_here(study):
    _, out, results = study
    h = results["hypotheses"][0]
    frames = {name: teacher_table(out, *where) for name, where in CONFIGS.items()}
    # the population every configuration shares: labelled and shown to none as a demonstration
    shared = None
    for f in frames.values():
        ok = set(f.loc[f["label"].notna() & ~f["demo"].fillna(False).astype(bool), "item"].astype(str))
        shared = ok if shared is None else shared & ok
    first = frames["smol/d0"]
    items = [it for it in first["item"].astype(str) if it in shared]
    gold = first.set_index(first["item"].astype(str))["gold"]
    lo, hi = _wald(float((gold.loc[items] == "hate speech").mean()), len(items), 0.9)
    ref = h["reference"]
    assert (ref["lower"], ref["upper"]) == pytest.approx((lo, hi), abs=1e-9)
    assert ref["decision"] == ("+" if lo > 0.05 else "-" if hi < 0.05 else "0")
    # the first gold draw, by the rule the docs state: numpy's default_rng(seed).choice without replacement
    rng = np.random.default_rng(0)
    assert len(items) >= 22  # the premise above: a draw of GOLD_SIZE is a real subset
    pick = [items[i] for i in np.sort(rng.choice(len(items), GOLD_SIZE, replace=False))]
    y = (gold.loc[pick] == "hate speech").to_numpy(dtype=float)
    for row in h["configurations"]:
        f = frames[row["name"]]
        pop = f[f["label"].notna() & ~f["demo"].fillna(False).astype(bool)].set_index("item")
        t_lo, t_hi = _wald(float((pop["label"] == "hate speech").mean()), len(pop), 0.9)
        assert (row["teacher"]["lower"], row["teacher"]["upper"]) == pytest.approx((t_lo, t_hi), abs=1e-9)
        want = "+" if t_lo > 0.05 else "-" if t_hi < 0.05 else "0"
        assert row["teacher"]["decision"] == want
        p = pop["p:hate speech"].to_numpy(dtype=float)
        p_lo, p_hi = ppi_py.ppi_mean_ci(y, pop.loc[pick, "p:hate speech"].to_numpy(dtype=float), p, alpha=0.1)
        got = row["draws"][0]["ppi_teacher"]
        assert (got["lower"], got["upper"]) == pytest.approx((float(p_lo[0]), float(p_hi[0])), abs=1e-9)
    # the error shares are the decisions counted: teacher as truth once per draw, PPI++ per draw
    for method in ("teacher", "ppi_teacher"):
        wrong = sum((row["teacher"]["error"] is not None) * 4 if method == "teacher" else
                    sum(d[method]["error"] is not None for d in row["draws"]) for row in h["configurations"])
        assert h["errors"][method]["any"] == pytest.approx(wrong / (4 * 4))


def test_the_report_shows_the_section_and_a_rerun_labels_nothing(study):
    tmp, out, results = study
    md = (out / "report.md").read_text()
    assert "## Do the conclusions survive?" in md and "mentions-offend-more" in md
    figs = sorted((out / "figures").glob("*forest.png"))
    assert len(figs) == 2 and all(f.stat().st_size > 10_000 for f in figs)
    html = (out / "report.html").read_text()
    assert "Do the conclusions survive?" in html and html.count("data:image/png;base64") >= 2
    r = cli("study", "run", str(tmp / "study.toml"), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads((out / "results.json").read_text())
    assert all(t["this_run"]["labelled"] == 0 for t in again["teachers"]), again["teachers"]
    assert len(again["teachers"]) == 4
    assert again["hypotheses"] == results["hypotheses"]  # same config and seeds, same decisions


@pytest.mark.parametrize("edit, expect", [
    (('target_class = "hate speech"', 'target_class = "spam"'),
     "[[hypotheses]] 'hate-above-5pct' on dataset toxic: prevalence: target_class 'spam' is not one of the labels"),
    (("threshold = 0.05", "threshold = 5"), "a prevalence needs a threshold between 0 and 1"),
    (('covariate = "contains:@"', 'covariate = "age"'), "covariate 'age' is unknown"),
    (('plain = "@prompts/plain.txt"', 'plain = "@prompts/missing.txt"'), "prompt file"),
    (('name = "mentions-offend-more"', 'name = "hate-above-5pct"'), "hypothesis names repeat"),
    (('covariate = "contains:@"', 'covariate = "contains:@"\ngroups = [2, 0]'),
     "group '2' of covariate 'contains:@' does not exist"),
    (('plain = "@prompts/plain.txt"', 'plain = "@prompts/empty.txt"'), "is empty"),
])
def test_bad_config_is_one_line_naming_the_entry(tmp_path, monkeypatch, edit, expect):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "plain.txt").write_text(PLAIN)
    (tmp_path / "prompts" / "empty.txt").write_text("  \n")
    (tmp_path / "bad.toml").write_text(CONFIG.replace(*edit))
    r = cli_in_process(monkeypatch, "study", "run", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "out"))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and expect in lines[0], r.stderr
    assert "bad.toml" in lines[0] or "[[hypotheses]]" in lines[0]
    assert not (tmp_path / "out" / "annotations.sqlite").exists()  # refused before any labelling
