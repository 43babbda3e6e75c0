"""A teacher with known errors: gold labels of a shipped dataset corrupted by a known noise matrix, with a
distribution P_S that is informative about the errors but imperfect (flipped items are flatter on average, with
overlap), so a mitigation's catch can be checked against the truth."""

import numpy as np
import pandas as pd

from silverlabel.data import load_dataset

# rows: gold, columns: teacher label (toxic: hate speech, offensive language, neither)
NOISE = np.array([[0.55, 0.35, 0.10],
                  [0.05, 0.85, 0.10],
                  [0.05, 0.20, 0.75]])


def synthetic_teacher(n: int = 600, *, seed: int = 0, failed: int = 5, noise: np.ndarray = NOISE):
    """(records, gold label strings, label names, flipped mask) for ``n`` random Toxic tweets."""
    ds = load_dataset("toxic")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds), n, replace=False))
    gold = ds.labels[idx]
    k = len(ds.label_names)
    teacher = np.array([rng.choice(k, p=noise[g]) for g in gold])
    flipped = teacher != gold
    logits = rng.normal(0, 0.7, (n, k))
    gap = np.where(flipped, rng.normal(0.8, 0.8, n), rng.normal(2.5, 1.0, n))  # overlapping, not separable
    logits[np.arange(n), teacher] = logits.max(axis=1) + np.clip(gap, 0.05, None)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    names = ds.label_names
    records = pd.DataFrame({"item": [ds.items[i] for i in idx], "text": [ds.texts[i] for i in idx],
                            "label": pd.Series([names[t] for t in teacher], dtype=object),
                            "entropy": -(p * np.log(p)).sum(axis=1),
                            **{f"p:{name}": p[:, c] for c, name in enumerate(names)},
                            "prompt_tokens": rng.integers(80, 120, n), "error": None})
    if failed:
        bad = rng.choice(n, failed, replace=False)
        records.loc[bad, "label"] = None
        records.loc[bad, [f"p:{name}" for name in names] + ["entropy"]] = np.nan
        records.loc[bad, "error"] = "timeout"
        flipped[bad] = True
    return records, [names[g] for g in gold], names, flipped
