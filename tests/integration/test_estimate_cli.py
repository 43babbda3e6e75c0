"""`silverlabel estimate` as a person runs it (the console script's entry point, in this process:
``tests.helpers.cli_in_process``): a designed gold sample from `select --design`, labelled (simulated with the gold
labels), read back by `merge`, estimated; the numbers checked against ppi_py called directly on the same data; and
every bad input a one-line error with exit code 2."""

import functools
import json

import numpy as np
import pandas as pd
import ppi_py
import pytest

from tests.synthetic_teacher import synthetic_teacher

N = 400


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("estimate")
    records, gold, names, _ = synthetic_teacher(N, seed=7)
    ann = tmp / "ann.parquet"
    records.to_parquet(ann, index=False)
    data = tmp / "data.csv"
    pd.DataFrame({"item": records["item"], "chars": records["text"].str.len(), "word": "x"}).to_csv(data, index=False)
    return tmp, ann, data, records, dict(zip(records["item"], gold)), names


def test_designed_sample_round_trip_matches_ppi_py(files, cli):
    run = functools.partial(cli, columns=200)  # wide enough that no table row wraps
    tmp, ann, data, records, gold, names = files
    sel = tmp / "sel.csv"
    r = run("select", "--annotations", ann, "--budget", "120", "--design", "active", "--out", sel,
            "--target-width", "0.05")
    assert r.returncode == 0, r.stderr
    assert "active design" in r.stdout and "gold labels for a half-width of 0.05" in r.stdout
    chosen = pd.read_csv(sel)
    assert ((chosen["inclusion_prob"] > 0) & (chosen["inclusion_prob"] <= 1)).all()
    chosen["label"] = chosen["item"].astype(str).map(gold)
    chosen.to_csv(tmp / "done.csv", index=False)
    merged = tmp / "merged.parquet"
    assert run("merge", "--annotations", ann, "--labels", tmp / "done.csv", "--out", merged).returncode == 0
    m = pd.read_parquet(merged)
    human = m[m["label_source"] == "human"]
    assert len(human) == len(chosen) and human["inclusion_prob"].notna().all()

    r = run("estimate", "--annotations", ann, "--gold", merged, "--json", "--target-width", "0.05")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # the reference: ppi_py on the population (teacher-labelled items) with w = 1 / inclusion probability
    pop = records[records["label"].notna()].reset_index(drop=True)
    pos = {it: i for i, it in enumerate(pop["item"].astype(str))}
    idx = np.array([pos[str(i)] for i in human["item"]])
    w = 1 / human["inclusion_prob"].to_numpy()
    for c, name in enumerate(names):
        y = (human["label"].to_numpy() == name).astype(float)
        f = pop[f"p:{name}"].to_numpy()
        lo, hi = ppi_py.ppi_mean_ci(y, f[idx], f, alpha=0.1, w=w)
        row = next(t for t in out["table"] if t["parameter"] == name and t["method"] == "ppi_teacher")
        assert (row["lower"], row["upper"]) == pytest.approx((lo[0], hi[0]))
        lo, hi = ppi_py.classical_mean_ci(y, w=w, alpha=0.1)
        row = next(t for t in out["table"] if t["parameter"] == name and t["method"] == "classical")
        assert (row["lower"], row["upper"]) == pytest.approx((lo, hi))
    assert out["n_gold"] == len(human) and out["design"] == "weighted"
    assert {p["parameter"] for p in out["power"]} == set(names)

    r = run("estimate", "--annotations", ann, "--gold", merged, "--target-width", "0.05")
    assert r.returncode == 0 and "PPI++ (teacher P_S)" in r.stdout and "gold labels needed" in r.stdout
    # the merge output as --annotations would hide the teacher's errors on exactly the gold items: refused
    r = run("estimate", "--annotations", merged, "--gold", merged)
    assert r.returncode == 2 and "is a `silverlabel merge` output" in r.stderr


def _gold_csv(tmp, name, rows, header="item,label"):
    path = tmp / name
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def _some_gold(records, gold, k=30):
    return [(it, gold[it]) for it in records.loc[records["label"].notna(), "item"][:k]]


@pytest.mark.parametrize("case", ["bad label", "unknown item", "inclusion 0", "inclusion 1.5", "missing column",
                                  "not numeric", "too few gold"])
def test_bad_input_is_one_line_with_exit_2(files, case, cli):
    tmp, ann, data, records, gold, names = files
    rows = _some_gold(records, gold)
    extra = []
    if case == "bad label":
        path, expect = _gold_csv(tmp, "g1.csv", rows[:5] + [(rows[5][0], "maybe")]), "has label 'maybe'"
    elif case == "unknown item":
        path, expect = _gold_csv(tmp, "g2.csv", rows + [("no-such-item", names[0])]), "'no-such-item' is not in"
    elif case.startswith("inclusion"):
        value = case.split()[1]
        body = [(i, lab, 0.2) for i, lab in rows]
        body[3] = (body[3][0], body[3][1], value)
        path = _gold_csv(tmp, f"g-{value}.csv", body, header="item,label,inclusion_prob")
        expect = f"item '{body[3][0]}' has inclusion_prob {float(value)}"
    elif case == "missing column":
        path, expect = _gold_csv(tmp, "g3.csv", rows), "no column 'age' for the covariates"
        extra = ["--estimand", "ols", "--target-class", names[0], "--covariates", "age", "--data", data]
    elif case == "not numeric":
        path, expect = _gold_csv(tmp, "g4.csv", rows), "column 'word' is not numeric"
        extra = ["--estimand", "logistic", "--target-class", names[0], "--covariates", "word", "--data", data]
    else:
        path, expect = _gold_csv(tmp, "g5.csv", rows[:2]), "2 usable gold labels for 2 parameter"
        extra = ["--estimand", "ols", "--target-class", names[0], "--covariates", "chars", "--data", data]
    # in process through the console script's entry point: a subprocess would add ~5 s of imports (ppi_py)
    r = cli("estimate", "--annotations", ann, "--gold", path, *extra)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert expect in lines[0] and "Traceback" not in r.stderr
    assert (str(path) in lines[0]) or (str(data) in lines[0])


HYPOTHESES = """
[[hypotheses]]
name = "hate-above-10pct"
estimand = "prevalence"
target_class = "{c0}"
threshold = 0.1
level = 0.9

[[hypotheses]]
name = "long-tweets-differ"
estimand = "difference"
target_class = "{c1}"
covariate = "long"
groups = ["yes", "no"]
level = 0.9
"""


def test_hypotheses_across_annotation_files_match_ppi_py(files, tmp_path, cli):
    """Two teachers of different bias (two annotations files): each hypothesis decided by each, teacher as truth
    and PPI++ against ppi_py called here on the same data, the reference from the gold sample alone (said so)."""
    run = functools.partial(cli, columns=200)
    tmp, ann, data, records, gold, names = files
    other, _, _, _ = synthetic_teacher(N, seed=7, noise=np.array([[0.2, 0.6, 0.2], [0.02, 0.9, 0.08],
                                                                  [0.02, 0.5, 0.48]]))
    ann2 = tmp_path / "overcalls.parquet"
    other.to_parquet(ann2, index=False)
    (tmp_path / "h.toml").write_text(HYPOTHESES.format(c0=names[0], c1=names[1]))
    rows = [(it, gold[it]) for it in records["item"].iloc[:150]]
    gpath = _gold_csv(tmp_path, "gold.csv", rows)
    long = records["text"].str.len() > records["text"].str.len().median()
    groups = pd.DataFrame({"item": records["item"], "long": np.where(long, "yes", "no")})
    groups.to_csv(tmp_path / "groups.csv", index=False)
    r = run("estimate", "--annotations", ann, "--annotations", ann2, "--gold", gpath, "--data",
            tmp_path / "groups.csv", "--hypotheses", tmp_path / "h.toml", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)["hypotheses"]
    assert [h["name"] for h in out] == ["hate-above-10pct", "long-tweets-differ"]
    assert out[0]["reference"]["source"].startswith("each gold sample alone")
    g_items = [str(i) for i, _ in rows]
    for h in out:
        assert [c["name"] for c in h["configurations"]] == ["ann", "overcalls"]
        for conf, frame in zip(h["configurations"], (records, other)):
            pop = frame[frame["label"].notna()].reset_index(drop=True)
            pos = {it: i for i, it in enumerate(pop["item"].astype(str))}
            keep = [it for it in g_items if it in pos]
            idx = np.array([pos[it] for it in keep])
            cls = names[0] if h["name"] == "hate-above-10pct" else names[1]
            y = np.array([gold[it] == cls for it in keep], dtype=float)
            f = pop[f"p:{cls}"].to_numpy()
            naive = (pop["label"] == cls).to_numpy(dtype=float)
            if h["name"] == "hate-above-10pct":
                lo, hi = ppi_py.ppi_mean_ci(y, f[idx], f, alpha=0.1)
                t_lo, t_hi = ppi_py.classical_mean_ci(naive, alpha=0.1)
                null = 0.1
            else:
                x = pop["item"].astype(str).map(dict(zip(groups["item"].astype(str), groups["long"]))) == "yes"
                X = np.column_stack([np.ones(len(pop)), x.to_numpy(dtype=float)])
                lo, hi = (b[1] for b in ppi_py.ppi_ols_ci(X[idx], y, f[idx], X, f, alpha=0.1))
                t_lo, t_hi = (b[1] for b in ppi_py.classical_ols_ci(X, naive, alpha=0.1))
                # the OLS coefficient on the group indicator is the difference of the two shares
                assert (t_lo + t_hi) / 2 == pytest.approx(naive[x.to_numpy()].mean() - naive[~x.to_numpy()].mean())
                null = 0.0
            got = conf["draws"][0]["ppi_teacher"]
            assert (got["lower"], got["upper"]) == pytest.approx((float(np.ravel(lo)[0]), float(np.ravel(hi)[0])))
            assert (conf["teacher"]["lower"], conf["teacher"]["upper"]) == pytest.approx(
                (float(np.ravel(t_lo)[0]), float(np.ravel(t_hi)[0])))
            want = "+" if got["lower"] > null else "-" if got["upper"] < null else "0"
            assert got["decision"] == want
    r = run("estimate", "--annotations", ann, "--annotations", ann2, "--gold", gpath, "--data",
            tmp_path / "groups.csv", "--hypotheses", tmp_path / "h.toml")
    assert r.returncode == 0 and "teacher as truth" in r.stdout and "by choosing a configuration" in r.stdout


@pytest.mark.parametrize("case", ["same name", "missing file", "unknown group", "bad threshold"])
def test_bad_hypotheses_input_is_one_line(files, tmp_path, case, cli):
    tmp, ann, data, records, gold, names = files
    gpath = _gold_csv(tmp_path, "gold.csv", [(it, gold[it]) for it in records["item"].iloc[:60]])
    text = HYPOTHESES.format(c0=names[0], c1=names[1])
    anns = [ann, ann]
    (tmp_path / "copy").mkdir()
    extra = ["--data", tmp_path / "groups.csv"]
    pd.DataFrame({"item": records["item"], "long": "no"}).to_csv(tmp_path / "groups.csv", index=False)
    if case == "same name":
        expect = "two configurations are called 'ann'"
    else:
        anns = [ann]
        if case == "missing file":
            text, expect = None, "no such file"
        elif case == "unknown group":
            expect = "no item has long = yes"
        else:
            text, expect = text.replace("threshold = 0.1", "threshold = 10"), "threshold between 0 and 1"
    if text is not None:
        (tmp_path / "h.toml").write_text(text)
    args = [a for p in anns for a in ("--annotations", p)]
    r = cli("estimate", *args, "--gold", gpath, *extra, "--hypotheses", tmp_path / "h.toml")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and expect in lines[0], r.stderr
