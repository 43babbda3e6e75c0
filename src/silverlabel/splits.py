"""Seeded, stratified splits of a dataset into training, validation and test items: nested, so a smaller split
of the same seed lies inside a larger one, and temporal where the data says so (the manifestos' elections)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import Dataset
from .errors import SilverlabelError


@dataclass
class Splits:
    """Seeded stratified splits of one dataset."""

    train: Dataset
    validation: Dataset
    test: Dataset

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def split(
    dataset: Dataset,
    *,
    n_train: int = 5000,
    n_test: int = 2000,
    n_validation: int | None = None,
    seed: int = 0,
) -> Splits:
    """Stratified, seeded splits. ``n_test`` is exact; ``n_train`` is a cap (the paper's 5000), as is
    ``n_validation`` (default: a tenth of the training size, at least one item per class)."""
    from sklearn.model_selection import train_test_split

    n = len(dataset)
    k = dataset.num_labels
    for value, flag in ((n_train, "n_train"), (n_test, "n_test"), (n_validation, "n_validation")):
        if value is not None and value < 1:
            raise SilverlabelError(f"{flag} must be at least 1 (got {value})")
    counts = np.bincount(dataset.labels, minlength=k)
    present = counts > 0
    if (counts[present] < 3).any():
        rare = dataset.label_names[int(np.flatnonzero(present & (counts < 3))[0])]
        raise SilverlabelError(
            f"dataset '{dataset.name}': class '{rare}' has fewer than 3 examples, too few to appear in train, "
            "validation and test; add examples or drop the class"
        )
    n_classes = int(present.sum())
    if n_test >= n - 2 * n_classes:
        raise SilverlabelError(
            f"dataset '{dataset.name}': a test split of {n_test} leaves too little of the {n} items for training; "
            f"use --n-test (n_test in a study config) below {n - 2 * n_classes}"
        )
    if n_test < n_classes:
        raise SilverlabelError(f"n_test={n_test} is smaller than the number of classes ({n_classes})")
    if n_validation is None:
        n_validation = max(n_classes, n_train // 10)
    if dataset.periods is not None:
        return _temporal_split(dataset, n_train=n_train, n_test=n_test, n_validation=n_validation, seed=seed)
    if n_validation < n_classes:  # scikit-learn's stratified draw would stop with a traceback
        raise SilverlabelError(f"dataset '{dataset.name}': n_validation={n_validation} is smaller than the number "
                               f"of classes ({n_classes}); a stratified validation split takes one item of each, "
                               f"so use {n_classes} or more")
    index = np.arange(n)
    rest, test = train_test_split(index, test_size=n_test, stratify=dataset.labels, random_state=seed)
    n_validation = min(n_validation, len(rest) - n_classes)
    n_train = min(n_train, len(rest) - n_validation)
    train, validation = train_test_split(rest, train_size=n_train, test_size=n_validation,
                                         stratify=dataset.labels[rest], random_state=seed)
    # sorted so the same seed gives the same order regardless of sklearn internals; students shuffle themselves
    splits = Splits(train=dataset.subset(np.sort(train)), validation=dataset.subset(np.sort(validation)),
                    test=dataset.subset(np.sort(test)))
    check_split_labels(splits)
    return splits


def annotation_split(dataset: Dataset, *, n_train: int = 5000, n_test: int = 2000, seed: int = 0) -> Dataset:
    """The items ``annotate`` labels: the training split of ``split`` (so ``train --annotations`` finds every one
    of its training items), topped up to ``n_train`` from the validation split, which annotate itself never uses
    (on a small file the validation split would otherwise take most of what the test split leaves)."""
    splits = split(dataset, n_train=n_train, n_test=n_test, seed=seed)
    room = n_train - len(splits.train)
    if room <= 0 or len(splits.validation) == 0:
        return splits.train
    position = {item: i for i, item in enumerate(dataset.items)}
    taken = splits.train.items + splits.validation.items[:room]
    return dataset.subset(np.sort([position[i] for i in taken]))


def _stratify(labels: np.ndarray) -> np.ndarray | None:
    """Stratify on the labels where scikit-learn can (every class twice or more), else draw plainly."""
    counts = np.bincount(labels)
    return labels if (counts[counts > 0] >= 2).all() and len(counts[counts > 0]) > 1 else None


def _temporal_split(dataset: Dataset, *, n_train: int, n_test: int, n_validation: int, seed: int) -> Splits:
    """Test on the newest periods, train and validate on the older ones (no period is on both sides).

    Whole periods join the test pool, newest first, until it holds ``n_test`` items; ``n_test`` of them are drawn
    (stratified) and the rest of those periods is left out, so a test statement never shares an election with a
    training statement. Training and validation are stratified draws from the older periods.
    """
    from sklearn.model_selection import train_test_split

    periods = np.asarray(dataset.periods, dtype=object)
    newest_first = sorted(set(periods.tolist()), reverse=True)
    test_periods: list[str] = []
    for p in newest_first:
        if int(np.isin(periods, test_periods).sum()) >= n_test:
            break
        test_periods.append(p)
    is_test = np.isin(periods, test_periods)
    newer, older = np.flatnonzero(is_test), np.flatnonzero(~is_test)
    k = int((np.bincount(dataset.labels[older], minlength=dataset.num_labels) > 0).sum()) if len(older) else 0
    if len(older) < 2 * max(k, 2) or len(newer) < n_test:
        raise SilverlabelError(
            f"dataset '{dataset.name}': a temporal test split of {n_test} items takes the periods "
            f"{', '.join(map(str, test_periods))} and leaves {len(older)} of the {len(dataset)} items in earlier "
            f"periods for training; lower n_test (the newest period alone holds "
            f"{int((periods == newest_first[0]).sum())} items)")
    if len(newer) > n_test:
        newer, _ = train_test_split(newer, train_size=n_test, stratify=_stratify(dataset.labels[newer]),
                                    random_state=seed)
    n_validation = min(n_validation, len(older) - k)
    n_train = min(n_train, len(older) - n_validation)
    train, validation = train_test_split(older, train_size=n_train, test_size=n_validation,
                                         stratify=_stratify(dataset.labels[older]), random_state=seed)
    splits = Splits(train=dataset.subset(np.sort(train)), validation=dataset.subset(np.sort(validation)),
                    test=dataset.subset(np.sort(newer)))
    check_split_labels(splits)
    return splits


def check_split_labels(splits: Splits) -> None:
    """Labels that appear in test but never in training cannot be learned; refuse them up front."""
    train_labels = set(splits.train.labels.tolist())
    missing = sorted(set(splits.test.labels.tolist()) - train_labels)
    if missing:
        name = splits.test.label_names[missing[0]]
        raise SilverlabelError(
            f"dataset '{splits.test.name}': label '{name}' is in the test split but not in the training split; "
            "add training examples of it or drop it from the test data"
        )
