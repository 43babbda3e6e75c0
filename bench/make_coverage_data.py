"""Teacher labels for the coverage bench: 2000 items each of the shipped toxic (real Davidson tweets) and imdb
(stand-in) presets, labelled once by the shipped Qwen2.5-0.5B teacher, stored as a small Parquet file.

The 2000 items are a seeded random sample of each preset; the 3 demonstrations are drawn (seed 0) from the
*other* items, so no item of the estimation population saw its own gold label in the prompt. The file holds
item, gold, teacher label and P_S (p:<label>) per item; the sidecar JSON holds the file's sha256, the model's
sha256, the prompt hash and the demonstration items, so `tests/test_inference_coverage.py` can recompute a few
items with the real teacher and notice any drift.

Run (about 25-40 min on 2 cores; resumable through the SQLite cache):
    nice -n 10 python bench/make_coverage_data.py [--cache PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from silverlabel.assets import GGUF_ASSETS
from silverlabel.cache import AnnotationStore
from silverlabel.data import load_dataset
from silverlabel.teachers import Prompt, get_teacher, sample_demonstrations

HERE = Path(__file__).parent / "data"
OUT = HERE / "coverage-teacher.parquet"
META = HERE / "coverage-teacher.json"
TEACHER = "llamacpp:qwen2.5-0.5b"
DATASETS = ("toxic", "imdb")
N_ITEMS = 2000
K_SHOT = 3
SEED = 0


def population(name: str, n_items: int = N_ITEMS):
    """The dataset, the index of its 2000-item population and the demonstrations drawn from the rest."""
    ds = load_dataset(name)
    rng = np.random.default_rng(SEED)
    chosen = rng.permutation(len(ds))[:N_ITEMS]  # in random order: any prefix is a uniform sample too
    rest = np.setdiff1d(np.arange(len(ds)), chosen)
    chosen = chosen[:n_items]
    pool = ds.subset(rest)
    demos = sample_demonstrations(pool.texts, pool.labels, pool.label_names, k=K_SHOT, seed=SEED)
    demo_items = [pool.items[i] for i in np.flatnonzero(demos.shows(pool.texts))]
    assert not demos.shows(ds.subset(chosen).texts).any()
    prompt = Prompt(task=ds.task, label_names=tuple(ds.label_names), demonstrations=demos)
    return ds, chosen, prompt, demo_items


def _cached_prefix(teacher, store, name: str) -> int:
    from silverlabel.cache import text_hash

    ds, chosen, prompt, _ = population(name)
    hashes = [text_hash(ds.texts[i]) for i in chosen]
    have = store.get_many(teacher.model_id, teacher.cache_key(prompt), hashes)
    n = 0
    while n < len(hashes) and hashes[n] in have:
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "silverlabel-coverage.sqlite"))
    parser.add_argument("--n-items", type=int, default=N_ITEMS, help="items per dataset (a prefix of the 2000)")
    parser.add_argument("--rounds", type=int, default=8, help="annotate the datasets in turns of n/rounds items, "
                        "so an interrupted run leaves both with the same number of cached items")
    parser.add_argument("--write-cached", action="store_true", help="annotate nothing: write the file for the "
                        "longest prefix of the 2000 that is cached for both datasets (an interrupted run)")
    args = parser.parse_args()
    store = AnnotationStore(args.cache)
    teacher = get_teacher(TEACHER, chat=True)  # loads no weights until something must be scored
    if args.write_cached:
        args.n_items = min(_cached_prefix(teacher, store, name) for name in DATASETS)
        args.rounds = 1
    meta = {"teacher": TEACHER, "model_sha256": GGUF_ASSETS["qwen2.5-0.5b"].sha256, "model_id": teacher.model_id,
            "n_items": args.n_items, "k_shot": K_SHOT, "seed": SEED, "datasets": {}}
    pops = {name: population(name, args.n_items) for name in DATASETS}
    step = -(-args.n_items // args.rounds)
    try:
        for stop in range(step, args.n_items + step, step):  # turns: both datasets grow together
            for name, (ds, chosen, prompt, _) in pops.items():
                sub = ds.subset(chosen[:stop])
                teacher.annotate(sub.items, sub.texts, prompt, store=store, description=f"{name} to {stop}")
            print(json.dumps({"cached_per_dataset": min(stop, args.n_items)}), flush=True)
        frames = []
        for name, (ds, chosen, prompt, demo_items) in pops.items():
            sub = ds.subset(chosen)
            ann = teacher.annotate(sub.items, sub.texts, prompt, store=store, gold=sub.labels)
            f = ann.frame
            frames.append(pd.DataFrame({"dataset": name, "item": f["item"].astype(str),
                                        "gold": [ds.label_names[g] for g in sub.labels], "label": f["label"],
                                        **{c: f[c].astype(np.float64) for c in f.columns if c.startswith("p:")}}))
            meta["datasets"][name] = {"label_names": list(ds.label_names), "prompt_key": teacher.cache_key(prompt),
                                      "demo_items": demo_items, "accuracy": ann.summary.accuracy,
                                      "failed": ann.summary.failed}
    finally:
        teacher.close()
        store.close()
    HERE.mkdir(parents=True, exist_ok=True)
    # both datasets in one file: the p:<label> columns of the other dataset's labels are NaN
    pd.concat(frames, ignore_index=True).to_parquet(OUT, index=False)
    meta["sha256"] = hashlib.sha256(OUT.read_bytes()).hexdigest()
    META.write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps({"wrote": str(OUT), "sha256": meta["sha256"],
                      "accuracy": {k: v["accuracy"] for k, v in meta["datasets"].items()}}))


if __name__ == "__main__":
    main()
