"""Are the intervals of `silverlabel estimate` valid? Coverage of nominal 90 % intervals on real data.

The population is `bench/data/coverage-teacher.parquet`: per dataset (the shipped toxic tweets, real, and the imdb
stand-in) every item's gold label, the shipped Qwen2.5-0.5B teacher's label and P_S (made by
`bench/make_coverage_data.py`; its sha256 is checked). The truth is each class's share among all the items' gold
labels. Each draw is a gold sample by a design of :mod:`silverlabel.sampling` (Poisson sampling with expected size n:
uniform, or active = proportional to the teacher's entropy with a 10 % uniform floor), and each method's interval
comes from :func:`silverlabel.inference.prevalence_intervals` (the code `estimate` runs). Coverage is reported for
every class's prevalence; ``ppi_coverage_range`` is the lowest and highest PPI coverage over the classes. By default
each draw also redraws the N annotated items with replacement (the superpopulation frame ppi_py's intervals are
for); ``--finite`` adds the frame where the N stored items are the whole population (see :func:`coverage`).

The cross-fitted student is not part of the bench: cross-fitting 5 MiniLM students per draw for 500 draws is days
of CPU; its validity rests on the same PPI++ code with out-of-fold predictions (tests check the cross-fitting).

``--deployed`` measures the deployed-student surrogate of ``estimate --predictions`` instead: per dataset, a seeded
500 of the 2000 stored items train one MiniLM student on the *teacher's* labels (3 epochs, saved with its record),
``silverlabel predict`` labels the other 1500, and those 1500 are the population the gold samples are drawn from,
so no gold item was ever seen by the student, as ``estimate`` requires. Its lines add ``ppi_deployed``.

    python bench/coverage.py [--draws 500] [--sizes 100,200] [--deployed]
One JSON line per dataset, n and design.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

# run as a script, this file's folder is first on sys.path and this module would shadow the `coverage` package
# that numba (under ppi_py) imports; drop the folder (imported as bench.coverage, nothing changes)
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from silverlabel.inference import prevalence_intervals  # noqa: E402
from silverlabel.sampling import draw, inclusion_probabilities  # noqa: E402

DATA = Path(__file__).parent / "data" / "coverage-teacher.parquet"
META = DATA.with_suffix(".json")
METHODS = ("teacher", "classical", "ppi_teacher")


def load(path: Path = DATA, meta_path: Path = META) -> tuple[pd.DataFrame, dict]:
    """The stored teacher labels, after checking the file is the one whose sha256 was recorded."""
    meta = json.loads(meta_path.read_text())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != meta["sha256"]:
        raise SystemExit(f"{path}: sha256 {digest} is not the recorded {meta['sha256']}; rerun "
                         "bench/make_coverage_data.py")
    return pd.read_parquet(path), meta


def dataset_arrays(frame: pd.DataFrame, names: list[str]):
    """Gold class index, P_S, teacher class index and entropy of every item of one dataset."""
    index = {n: i for i, n in enumerate(names)}
    gold = frame["gold"].map(index).to_numpy(dtype=np.int64)
    probs = frame[[f"p:{n}" for n in names]].to_numpy(dtype=np.float64)
    teacher = frame["label"].map(index).fillna(-1).to_numpy(dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(probs > 0, probs * np.log(probs), 0.0), axis=1)
    return gold, probs, teacher, entropy


def coverage(gold, probs, teacher, entropy, names, *, n: int, design: str, draws: int, level: float = 0.9,
             seed: int = 0, floor: float = 0.1, resample: bool = True, deployed: np.ndarray | None = None) -> dict:
    """Coverage and mean width per method and class over ``draws`` gold samples of expected size ``n``.

    The truth is each class's share among the gold labels of all the stored items. With ``resample`` (the
    superpopulation frame, the one ppi_py's intervals are for: the N annotated items are a random sample of a
    larger population) every draw first draws N items with replacement from the stored ones, then the gold sample
    from those. Without it the population is the stored items themselves and the gold sample a share n/N of a
    finite population; the intervals then over-cover by about the finite-population factor 1/sqrt(1 - n/N),
    because they charge the teacher's mean over the N items a sampling error it does not have there."""
    truth = np.array([(gold == c).mean() for c in range(len(names))])
    N = len(gold)
    fixed_pi = inclusion_probabilities(entropy, n, design=design, floor=floor)
    methods = METHODS + (("ppi_deployed",) if deployed is not None else ())
    hits = {m: np.zeros(len(names)) for m in methods}
    widths = {m: np.zeros(len(names)) for m in methods}
    sizes = []
    for r in range(draws):
        rng = np.random.default_rng([seed, r])
        pop = rng.integers(0, N, N) if resample else np.arange(N)
        pi = inclusion_probabilities(entropy[pop], n, design=design, floor=floor) if resample else fixed_pi
        sample = draw(pi, seed=int(rng.integers(2 ** 32)), name=design)
        idx = np.flatnonzero(sample.chosen)
        sizes.append(len(idx))
        weights = None if design == "uniform" else 1.0 / pi[idx]
        for iv in prevalence_intervals(gold[pop][idx], idx, probs[pop], teacher[pop], names, level=level,
                                       weights=weights, deployed_probs=None if deployed is None else deployed[pop]):
            c = names.index(iv.parameter)
            hits[iv.method][c] += iv.lower <= truth[c] <= iv.upper
            widths[iv.method][c] += iv.width
    cov = {m: dict(zip(names, np.round(hits[m] / draws, 4).tolist())) for m in methods}
    width = {m: dict(zip(names, np.round(widths[m] / draws, 5).tolist())) for m in methods}
    ratio = dict(zip(names, np.round(widths["ppi_teacher"] / widths["classical"], 4).tolist()))
    ppi = list(cov["ppi_teacher"].values())
    extra = {}
    if deployed is not None:
        dep = list(cov["ppi_deployed"].values())
        extra = {"deployed_coverage_range": [min(dep), max(dep)], "deployed_over_classical_width": dict(zip(
            names, np.round(widths["ppi_deployed"] / widths["classical"], 4).tolist()))}
    return {**extra, "n": n, "design": design, "frame": "superpopulation" if resample else "finite", "draws": draws,
            "level": level, "mean_gold": float(np.mean(sizes)), "truth": dict(zip(names, np.round(truth, 4).tolist())),
            "coverage": cov, "mean_width": width, "ppi_over_classical_width": ratio,
            "ppi_coverage_range": [min(ppi), max(ppi)], "ppi_width_ratio_max": max(ratio.values())}


def deployed_student(sub: pd.DataFrame, name: str, names: list[str], folder: Path, *, n_train: int = 500,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train one student on the teacher's labels of ``n_train`` seeded items, predict the rest with `silverlabel
    predict`; returns the rest's row positions and their mean p:<label> (one student: its own)."""
    from silverlabel.config import TrainConfig
    from silverlabel.corpus import predict
    from silverlabel.data import load_dataset
    from silverlabel.students import train_student
    from silverlabel.students.saved import finish_saved_model, training_record

    ds = load_dataset(name)
    text = dict(zip(map(str, ds.items), ds.texts))
    order = np.random.default_rng(seed).permutation(len(sub))
    train = order[:n_train][sub["label"].iloc[order[:n_train]].notna().to_numpy()]  # the teacher labelled them
    rest = np.sort(order[n_train:])
    texts = [text[str(i)] for i in sub["item"].iloc[train]]
    targets = sub["label"].iloc[train].map({n: i for i, n in enumerate(names)}).to_numpy()
    config = TrainConfig(model="minilm", epochs=3, save_model=True, select_best=False)
    model = folder / f"{name}-student"
    train_student(texts, targets, num_labels=len(names), config=config, seed=1, save_dir=model)
    finish_saved_model(model, label_names=names, record={
        "train_config": config.to_dict(), "seed": 1,
        **training_record(list(map(str, sub["item"].iloc[train])), texts, [], [])})
    corpus = folder / f"{name}-rest.csv"
    pd.DataFrame({"item": sub["item"].iloc[rest].astype(str), "text": [text[str(i)] for i in sub["item"].iloc[rest]]}
                 ).to_csv(corpus, index=False)
    out = folder / f"{name}-rest-predictions.parquet"
    predict([model], corpus, out, id_column="item", overwrite=True)
    got = pd.read_parquet(out)
    assert got["item"].astype(str).tolist() == sub["item"].iloc[rest].astype(str).tolist()
    return rest, got[[f"p:{n}" for n in names]].to_numpy(dtype=np.float64)


def export(name: str, n_gold: int, out: Path, *, seed: int = 0) -> None:
    """Write one dataset's stored labels as a `silverlabel annotate`-style file (texts from the shipped preset)
    and a uniform gold sample of ``n_gold`` items as item,label CSV, to run `silverlabel estimate` on."""
    from silverlabel.data import load_dataset

    frame, meta = load()
    sub = frame[frame["dataset"] == name].reset_index(drop=True)
    names = meta["datasets"][name]["label_names"]
    ds = load_dataset(name)
    text = dict(zip(map(str, ds.items), ds.texts))
    probs = sub[[f"p:{n}" for n in names]]
    ann = pd.DataFrame({"item": sub["item"], "text": sub["item"].map(text), "label": sub["label"],
                        "entropy": dataset_arrays(sub, names)[3], **{c: probs[c] for c in probs.columns}})
    out.mkdir(parents=True, exist_ok=True)
    ann.to_parquet(out / f"{name}-annotations.parquet", index=False)
    idx = np.sort(np.random.default_rng(seed).choice(len(sub), n_gold, replace=False))
    sub.iloc[idx][["item", "gold"]].rename(columns={"gold": "label"}).to_csv(out / f"{name}-gold{n_gold}.csv",
                                                                             index=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--sizes", default="100,200")
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--finite", action="store_true", help="also the finite-population frame (no resampling)")
    parser.add_argument("--export", metavar="DATASET", help="write DATASET's annotations and a uniform gold sample "
                        "of --gold items to --out (for `silverlabel estimate`) instead of the bench")
    parser.add_argument("--gold", type=int, default=200)
    parser.add_argument("--deployed", action="store_true", help="the deployed-student surrogate (see above)")
    parser.add_argument("--out", type=Path, default=Path("coverage-export"))
    args = parser.parse_args()
    if args.export:
        export(args.export, args.gold, args.out)
        return
    frame, meta = load()
    for name, info in meta["datasets"].items():
        sub = frame[frame["dataset"] == name].reset_index(drop=True)
        names = info["label_names"]
        deployed, tag = None, {}
        if args.deployed:
            import tempfile

            rest, deployed = deployed_student(sub, name, names, Path(tempfile.mkdtemp(prefix="coverage-")))
            student_acc = float((deployed.argmax(1) == sub["gold"].iloc[rest].map(
                {n: i for i, n in enumerate(names)}).to_numpy()).mean())
            sub = sub.iloc[rest].reset_index(drop=True)
            tag = {"population": "the 1500 items outside the deployed student's 500 training items",
                   "deployed_student_accuracy": round(student_acc, 4)}
        arrays = dataset_arrays(sub, names)
        for n in (int(s) for s in args.sizes.split(",")):
            for design in ("uniform", "active"):
                for resample in (True, False) if args.finite else (True,):
                    row = coverage(*arrays, names, n=n, design=design, draws=args.draws, level=args.level,
                                   resample=resample, deployed=deployed)
                    print(json.dumps({"dataset": name, "N": len(sub), "teacher_accuracy": info["accuracy"],
                                      **tag, **row}), flush=True)


if __name__ == "__main__":
    main()
