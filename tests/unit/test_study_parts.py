"""The study's parts that need no model: config validation, nested training sizes, stable run ids, plateau
detection and bootstrap intervals (checked against an independent computation)."""

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from silverlabel.config import SHIPPED_CONFIGS, StudyConfig, load_study_config
from silverlabel.errors import SilverlabelError
from silverlabel.metrics import bootstrap_intervals, detect_plateau
from silverlabel.study import (
    demo_config,
    dry_run,
    grid_cells,
    label_sources,
    nested_order,
    prepare_dataset,
    write_run,
)

BASE = {"datasets": [{"source": "imdb", "n_train": 100, "n_test": 50}],
        "teachers": [{"name": "q", "uri": "llamacpp:qwen2.5-0.5b"}], "seeds": [1, 2]}


def config(**changes) -> StudyConfig:
    return StudyConfig.from_dict({**BASE, **changes})


SHIPPED = sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.toml"))
# offline, the 1122-item manifestos stand-in cannot hold the paper configs' n_test = 2000: the dry run marks those cells
OFFLINE_BLOCKED = {"paper": {"manifestos"}, "paper-scaling": {"manifestos"}}


# a dry run names each shipped teacher by its pinned checksum without loading (or even locating) its file, so the
# teacher-scaling config's optional 1.5B model (requirements-assets-large.txt, not in CI) is not needed to plan it


def test_every_config_in_the_package_is_tested():
    assert {"quick", "scaling-quick", "budget-quick", "teacher-scaling", "paper"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_validate_and_dry_run(name, tmp_path):
    cfg = load_study_config(name)
    assert cfg.name == name
    if name == "quick":
        assert len(cfg.datasets) >= 2 and cfg.seeds == [1, 2, 3] and set(cfg.label_sources) == {"gold", "teacher"}
    if name == "scaling-quick":
        assert len(cfg.sizes) >= 5
    planned = dry_run(cfg, tmp_path / "out", offline=True)
    n_sources = len(label_sources(cfg))
    n_sizes = len(cfg.sizes) if cfg.sizes else 1  # no sizes: each dataset's whole training split
    assert len(planned.cells) == len(cfg.datasets) * n_sources * len(cfg.students) * n_sizes * len(cfg.seeds)
    assert set(planned.blocked) == OFFLINE_BLOCKED.get(name, set())
    assert all("n_test" in why or "test split" in why for why in planned.blocked.values()), planned.blocked
    runnable = [c for c in planned.cells if c.dataset not in planned.blocked]
    assert planned.pending == len(runnable) > 0 and planned.training_steps > 0  # nothing done in a fresh folder
    assert not (tmp_path / "out" / "runs").exists()  # a dry run trains nothing


@pytest.mark.parametrize("changes, message", [
    ({"datasets": [{"source": "imdb", "n_trian": 5}]}, "unknown key 'datasets.0.n_trian'"),
    ({"seeds": [1, -2]}, "seeds must be 0 or more"),
    ({"seeds": [1, 1]}, "seeds repeat"),
    ({"label_sources": ["gold", "teacher:nobody"]}, "names no teacher"),
    ({"label_sources": ["silver"]}, "is not gold, teacher or teacher:NAME"),
    ({"sizes": [1, 10]}, "training sizes must be 2 or more"),
    ({"mitigations": [{"policy": "entropy", "budgets": [1.5]}]}, "above 100 %"),
    ({"mitigations": [{"policy": "magic"}]}, "policy 'magic' is unknown"),
    ({"mitigations": [{"policy": "ensemble"}]}, "2 or more demo_seeds"),
    ({"students": [{"name": "a"}, {"name": "a"}]}, "student names repeat"),
])
def test_bad_configs_name_the_field(changes, message):
    with pytest.raises(SilverlabelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config(**changes)


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("name = 'x'\n[[datasets]\nsource = 'imdb'\n")
    with pytest.raises(SilverlabelError, match="study.toml: not valid TOML"):
        load_study_config(path)
    with pytest.raises(SilverlabelError, match="no such config file"):
        load_study_config(tmp_path / "missing.toml")


def test_sizes_above_the_training_split_are_an_error():
    with pytest.raises(SilverlabelError, match="sizes: 200 is above dataset 'imdb' n_train = 100"):
        prepare_dataset(config().datasets[0], sizes=[50, 200], offline=True)


def test_nested_order_keeps_class_shares_in_every_prefix():
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    order = nested_order(labels, seed=3)
    assert sorted(order) == list(range(100))
    for size in (10, 20, 50, 100):
        counts = np.bincount(labels[order[:size]], minlength=3)
        assert np.all(np.abs(counts - size * np.array([0.7, 0.2, 0.1])) <= 1.5), (size, counts)
    assert not np.array_equal(order, nested_order(labels, seed=4))
    assert np.array_equal(order, nested_order(labels, seed=3))


def test_run_ids_are_stable_and_change_only_with_what_makes_the_run():
    cfg = config(sizes=[20, 40], students=[{"name": "a", "model": "minilm"}, {"name": "b", "model": "minilm",
                                                                               "learning_rate": 1e-4}])
    prepared = {d.key: prepare_dataset(d, sizes=cfg.sizes, offline=True) for d in cfg.datasets}
    cells = grid_cells(cfg, prepared)
    assert len(cells) == 2 * 2 * 2 * 2  # sources x students x sizes x seeds
    assert len({c.run_id for c in cells}) == len(cells)
    assert [c.run_id for c in cells] == [c.run_id for c in grid_cells(cfg, prepared)]
    # a third seed adds runs without renaming the finished ones (so a grown grid resumes)
    more = grid_cells(cfg.model_copy(update={"seeds": [1, 2, 3]}), prepared)
    assert {c.run_id for c in cells} < {c.run_id for c in more}
    # changing student b's recipe renames b's runs only
    students = [cfg.students[0], cfg.students[1].model_copy(update={"learning_rate": 3e-4})]
    changed = grid_cells(cfg.model_copy(update={"students": students}), prepared)
    same = {c.run_id for c in cells} & {c.run_id for c in changed}
    assert same == {c.run_id for c in cells if c.student == "a"}


def test_mitigation_sources_are_named_by_policy_budget_and_teacher():
    cfg = config(mitigations=[{"policy": "entropy", "budgets": [0.05, "25%", 40]}])
    names = [s.name for s in label_sources(cfg)]
    assert names == ["gold", "teacher:q", "entropy@5%:q", "entropy@25%:q", "entropy@40:q"]


def test_demo_is_quick_toml_with_overrides():
    assert demo_config() == load_study_config("quick")
    cfg = demo_config(dataset="toxic", teacher="llamacpp:smollm2-135m", n_train=50, seeds=[4])
    assert [d.source for d in cfg.datasets] == ["toxic"] and cfg.datasets[0].n_train == 50
    assert cfg.teachers[0].uri == "llamacpp:smollm2-135m" and cfg.seeds == [4]


@pytest.mark.parametrize("values, expected", [
    ([[0.5, 0.52], [0.70, 0.71], [0.80, 0.81], [0.81, 0.80], [0.80, 0.82]], 200),  # flat from 200
    ([[0.5, 0.5], [0.6, 0.6], [0.7, 0.7], [0.8, 0.8], [0.9, 0.9]], None),  # still climbing
    ([[0.80, 0.81], [0.80, 0.80], [0.81, 0.80], [0.80, 0.81], [0.81, 0.80]], 50),  # flat everywhere
    ([[0.5, 0.7], [0.6, 0.8], [0.70, 0.72], [0.60, 0.80], [0.70, 0.71]], 50),  # wide noise hides the climb
])
def test_plateau_detection(values, expected):
    assert detect_plateau([50, 100, 200, 400, 800], values) == expected


def _table(rng, n_items=60, n_runs=3, labels=("a", "b", "c")):
    gold = rng.choice(labels, n_items, p=[0.6, 0.3, 0.1])
    rows = []
    for r in range(n_runs):
        pred = np.where(rng.random(n_items) < 0.7, gold, rng.choice(labels, n_items))
        rows += [{"item": i, "run": f"r{r}", "pred": p, "gold": g} for i, (p, g) in enumerate(zip(pred, gold))]
    return pd.DataFrame(rows)


def test_bootstrap_matches_an_independent_computation():
    df = _table(np.random.default_rng(0))
    got = bootstrap_intervals(df, n_boot=200, seed=5)
    # the same resamples, scored the slow way with scikit-learn and the krippendorff package
    wide = df.pivot(index="run", columns="item", values="pred").sort_index()
    gold = df.drop_duplicates("item").set_index("item")["gold"].sort_index().to_numpy()
    preds = wide.to_numpy()
    codes = np.unique(preds, return_inverse=True)[1].reshape(preds.shape).astype(float)  # the package wants numbers
    rng = np.random.default_rng(5)
    want = {k: [] for k in ("macro_f1_mean", "accuracy_mean", "krippendorff_alpha", "macro_f1_std", "accuracy_std",
                            "p_unchanged")}
    for _ in range(200):
        idx = rng.integers(0, len(gold), len(gold))
        f1 = [f1_score(gold[idx], p[idx], average="macro") for p in preds]
        acc = [(gold[idx] == p[idx]).mean() for p in preds]
        want["macro_f1_mean"].append(np.mean(f1))
        want["accuracy_mean"].append(np.mean(acc))
        want["macro_f1_std"].append(np.std(f1, ddof=1))
        want["accuracy_std"].append(np.std(acc, ddof=1))
        want["p_unchanged"].append(np.mean([len(set(preds[:, i])) == 1 for i in idx]))
        want["krippendorff_alpha"].append(krippendorff.alpha(reliability_data=codes[:, idx],
                                                             level_of_measurement="nominal"))
    assert set(got) == set(want)
    for key, values in want.items():
        assert got[key] == pytest.approx(list(np.percentile(values, [2.5, 97.5]))), key
    # the level sets the percentiles
    narrow = bootstrap_intervals(df, n_boot=200, seed=5, level=0.5)
    assert narrow["accuracy_mean"] == pytest.approx(list(np.percentile(want["accuracy_mean"], [25, 75])))


def test_bootstrap_intervals_shrink_with_more_items_and_one_run_has_no_alpha():
    rng = np.random.default_rng(1)
    small = bootstrap_intervals(_table(rng, n_items=50), n_boot=300)
    large = bootstrap_intervals(_table(rng, n_items=2000), n_boot=300)
    width = {k: v[1] - v[0] for k, v in small.items()}
    assert large["accuracy_mean"][1] - large["accuracy_mean"][0] < width["accuracy_mean"] / 3
    one = bootstrap_intervals(_table(rng, n_runs=1), n_boot=50)
    assert one["krippendorff_alpha"] is None and one["accuracy_std"] == [0.0, 0.0] == one["macro_f1_std"]
    assert bootstrap_intervals(_table(rng), n_boot=0) == {}
    assert set(bootstrap_intervals(_table(rng), n_boot=1)) == set(small)  # one resample is still an answer
    two = _table(np.random.default_rng(4), n_runs=2)
    got, codes = bootstrap_intervals(two, n_boot=20, seed=1), two.pivot(index="run", columns="item", values="pred")
    assert got["krippendorff_alpha"] is not None and got["accuracy_std"][1] > 0 and got["macro_f1_std"][1] > 0
    boot_rng = np.random.default_rng(1)  # two runs: the std of two values, ddof = 1
    gold = two.drop_duplicates("item").set_index("item")["gold"].sort_index().to_numpy()
    stds = []
    for _ in range(20):
        idx = boot_rng.integers(0, len(gold), len(gold))
        stds.append(np.std([(gold[idx] == p[idx]).mean() for p in codes.to_numpy()], ddof=1))
    assert got["accuracy_std"] == pytest.approx(list(np.percentile(stds, [2.5, 97.5])))
    small_table = _table(np.random.default_rng(2), n_items=20)
    assert bootstrap_intervals(small_table) == bootstrap_intervals(small_table, n_boot=1000, seed=0)  # defaults
    with pytest.raises(SilverlabelError, match=r"^table: the table has no rows"):
        bootstrap_intervals(small_table.iloc[:0])


def test_table1_marks_collapsed_rows():
    from silverlabel.reporting import COLLAPSED, table1_rows

    base = {"teacher_accuracy": None, "n_train": 10, "accuracy_mean": 0.5, "macro_f1_mean": 0.3,
            "krippendorff_alpha": 1.0, "accuracy_std": 0.0, "macro_f1_std": 0.0, "p_unchanged": 1.0}
    rows = table1_rows([{**base, "label_source": "teacher:x", "one_class": True},
                        {**base, "label_source": "gold", "one_class": False}])
    assert rows[0]["labels"] == f"teacher:x {COLLAPSED}" and rows[1]["labels"] == "gold"


def test_collapse_is_not_a_plateau():
    from silverlabel.summary import plateau_after_collapse

    sizes = [25, 50, 100, 200, 400]
    assert plateau_after_collapse(25, sizes, sizes) is None  # one class everywhere: flat, but no plateau
    assert plateau_after_collapse(25, sizes, [25, 50]) == 100  # the plateau starts after the collapse
    assert plateau_after_collapse(200, sizes, [25]) == 200
    assert plateau_after_collapse(None, sizes, [25]) is None
    assert plateau_after_collapse(50, sizes, []) == 50


@pytest.mark.parametrize("source, name, key", [
    ("toxic", None, "toxic"), ("hf:stanfordnlp/imdb", None, "hf:stanfordnlp/imdb"),
    ("/home/me/data/tweets.csv.gz", None, "tweets"), ("runs/my.data.parquet", None, "my.data"),
    ("saved_hf_folder/train", None, "train"), ("/abs/x.csv", "mine", "mine")])
def test_a_dataset_from_a_file_is_named_by_its_stem_not_its_path(source, name, key):
    spec = StudyConfig.from_dict({"datasets": [{"source": source, "name": name}], "label_sources": ["gold"]})
    assert spec.datasets[0].key == key


def test_two_files_with_one_stem_need_names():
    with pytest.raises(SilverlabelError, match="dataset names repeat"):
        StudyConfig.from_dict({"datasets": [{"source": "a/t.csv"}, {"source": "b/t.csv"}], "label_sources": ["gold"]})


def test_run_labels_in_predictions_are_unique_across_datasets(tmp_path):
    cfg = config(datasets=[{"source": "imdb", "n_train": 30, "n_test": 20},
                           {"source": "toxic", "n_train": 30, "n_test": 20}])
    prepared = {d.key: prepare_dataset(d, sizes=cfg.sizes, offline=True) for d in cfg.datasets}
    cells = grid_cells(cfg, prepared)
    labels = [c.label for c in cells]
    assert len(set(labels)) == len(cells)  # before, imdb and toxic cells shared 'gold|minilm|n30|s1'
    frames = []
    for name in ("imdb", "toxic"):
        cell = next(c for c in cells if c.dataset == name and c.source.name == "gold" and c.seed == 1)
        k = len(prepared[name].splits.test.label_names)
        n = len(prepared[name].splits.test)
        write_run(tmp_path, cell, {"preds": np.zeros(n, int), "probs": np.full((n, k), 1 / k), "curve": [],
                                   "best_epoch": 1, "steps": 1, "seconds": 0.0, "device": "cpu"},
                  prep=prepared[name], meta={})
        frames.append(pd.read_parquet(tmp_path / "runs" / cell.run_id / "predictions.parquet"))
    runs = [set(f["run"]) for f in frames]
    assert runs[0] != runs[1] and all(len(r) == 1 for r in runs)
    both = pd.concat(frames)
    assert not both.duplicated(["run", "item"]).any()


def _ids(cfg: StudyConfig) -> dict[str, str]:
    """source name -> the hash part of its run ids (the slug before it is only for people)."""
    from silverlabel.study.grid import prepare_all

    cells = grid_cells(cfg, prepare_all(cfg, offline=True))
    return {c.source.name: c.run_id.rsplit("-", 1)[1] for c in cells if c.seed == 1}


def test_run_ids_are_keyed_by_the_teachers_uri_and_prompt_not_its_name():
    """README: renaming a teacher keeps its finished runs; pointing the name at another model does not."""
    base = _ids(config(label_sources=["gold", "teacher"]))
    renamed = _ids(config(label_sources=["gold", "teacher"],
                          teachers=[{"name": "other-name", "uri": "llamacpp:qwen2.5-0.5b"}]))
    moved = _ids(config(label_sources=["gold", "teacher"], teachers=[{"name": "q", "uri": "llamacpp:smollm2-135m"}]))
    prompted = _ids(config(label_sources=["gold", "teacher"],
                           teachers=[{"name": "q", "uri": "llamacpp:qwen2.5-0.5b", "k_shot": 2}]))
    assert base["teacher:q"] == renamed["teacher:other-name"]
    assert base["teacher:q"] != moved["teacher:q"] and base["teacher:q"] != prompted["teacher:q"]
    assert base["gold"] == renamed["gold"] == moved["gold"]  # gold runs do not depend on any teacher


def test_failed_teacher_items_are_dropped_and_counted_and_validation_follows_the_label_source():
    """README: items the teacher fails on are dropped from that source's training set and counted
    (accounting.dropped_failed); a teacher-label cell selects its checkpoint on the teacher's validation labels
    (what a user without gold would have), a gold cell on gold."""
    import pandas as pd

    from silverlabel.study.grid import prepare_all
    from silverlabel.study.labels import training_data

    cfg = config(label_sources=["gold", "teacher"])
    prep = prepare_all(cfg, offline=True)["imdb"]
    train, val = prep.splits.train, prep.splits.validation
    names = list(train.label_names)
    rng = np.random.default_rng(0)
    teacher_train = rng.integers(0, len(names), len(train.texts))
    failed = np.zeros(len(train.texts), dtype=bool)
    failed[[3, 10, 11, 40]] = True
    teacher_val = (val.labels + 1) % len(names)  # every validation label wrong, so following gold would show
    frame = pd.DataFrame({
        "item": list(train.items) + list(val.items),
        "split": ["train"] * len(train.texts) + ["validation"] * len(val.texts),
        "label": [None if f else names[t] for t, f in zip(teacher_train, failed)] + [names[t] for t in teacher_val]})
    sources = {s.name: s for s in label_sources(cfg)}
    spec = cfg.teachers[0]
    size = len(train.texts)
    data = training_data(prep, sources["teacher:q"], size, {spec.demo_seeds[0]: frame}, spec)
    pick = prep.training_positions(size)
    kept = [i for i in pick if not failed[i]]
    assert data.accounting == {"dropped_failed": 4}
    assert data.texts == [train.texts[i] for i in kept] and list(data.targets) == list(teacher_train[kept])
    assert list(data.val_labels) == list(teacher_val) and data.val_texts == list(val.texts)
    gold = training_data(prep, sources["gold"], size, {spec.demo_seeds[0]: frame}, spec)
    assert list(gold.val_labels) == list(val.labels) and len(gold.texts) == size and gold.accounting == {}
