"""Datasets: texts, labels and label names from files, the Hugging Face hub, or the paper's four presets.

A :class:`Dataset` is the whole labelled pool; :func:`split` turns it into seeded, stratified
train / validation / test splits with the paper's caps (5000 train, 2000 test). Every dataset carries its
provenance, so a report can say whether numbers come from the paper's real data or from an offline stand-in.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import socket
import urllib.parse
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import manifesto
from .errors import SilverlabelError
from .files import read_table

log = logging.getLogger(__name__)

DEFAULT_TASK = "Classify the text into one of the available labels."
MAX_CLASSES = 200  # more distinct values than this is nearly always the wrong column
MAX_TEXT_CHARS = 1_000_000  # a longer "text" is nearly always a broken CSV quote that swallowed the rest of a file


@dataclass(frozen=True)
class Provenance:
    """Where a dataset came from: the real source of a paper dataset, a stand-in, or the user's own file."""

    source: str
    real: bool
    paper_dataset: str | None = None
    licence: str = ""
    note: str = ""

    def describe(self) -> str:
        kind = "real" if self.real else "offline stand-in"
        if self.paper_dataset is None:
            return self.source
        return f"{kind} for the paper's {self.paper_dataset}: {self.source}"


@dataclass
class Dataset:
    """A labelled pool of texts. ``labels`` index into ``label_names``."""

    name: str
    items: list[str]
    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    task: str = DEFAULT_TASK
    provenance: Provenance = field(default_factory=lambda: Provenance(source="in memory", real=True))
    # when set, one sortable period per item (e.g. an election date "201211"): :func:`split` then tests on the
    # latest periods and trains on earlier ones (the paper's temporal split of Manifestos)
    periods: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if not (len(self.items) == len(self.texts) == len(self.labels)):
            raise SilverlabelError(f"dataset '{self.name}': items, texts and labels differ in length")
        if self.periods is not None and len(self.periods) != len(self.items):
            raise SilverlabelError(f"dataset '{self.name}': periods and items differ in length")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def subset(self, index) -> "Dataset":
        index = np.asarray(index, dtype=np.int64)
        return Dataset(
            name=self.name,
            items=[self.items[i] for i in index],
            texts=[self.texts[i] for i in index],
            labels=self.labels[index],
            label_names=list(self.label_names),
            task=self.task,
            provenance=self.provenance,
            periods=None if self.periods is None else [self.periods[i] for i in index],
        )

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=self.num_labels)
        return {name: int(c) for name, c in zip(self.label_names, counts)}

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"item": self.items, "text": self.texts, "label": [self.label_names[i] for i in self.labels]}
        )

    def fingerprint(self) -> str:
        """A hash of the content, so cached work is keyed by the data and not by a file name."""
        digest = hashlib.sha256()
        digest.update(json.dumps([self.label_names, self.task]).encode())
        for item, text, label in zip(self.items, self.texts, self.labels.tolist()):
            digest.update(f"{item}\x1f{text}\x1f{label}\x1e".encode())
        if self.periods is not None:  # a temporal split is part of what the data is
            digest.update(json.dumps(self.periods).encode())
        return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """One of the paper's datasets: how to load the real source, and the shipped stand-in otherwise.

    ``real_loader`` returns a frame with columns ``text`` and ``label`` (and ``item`` ids, else row numbers); a
    preset registered by a user has no shipped stand-in, so offline it is an error, not a fall-back."""

    name: str
    paper_dataset: str
    task: str
    label_names: tuple[str, ...]
    real_loader: Callable[[], pd.DataFrame] | None
    real_source: str
    stand_in_task: str | None = None  # when the stand-in asks a different question than the real data
    # the stand-in's `period` values in time order (value -> a sortable date), for a temporal split
    stand_in_periods: tuple[tuple[str, str], ...] = ()


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (HF_ENDPOINT) answers a TCP connect within a few seconds. Without this check
    an offline machine spends about 40 s in the datasets library's retries before falling back."""
    url = urllib.parse.urlparse(_hub_endpoint())
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError:
        return False
    return True


def _imdb_real() -> pd.DataFrame:
    if not hub_reachable():
        raise OSError(f"cannot connect to {_hub_endpoint()}")
    try:
        import datasets  # noqa: F401 - optional
    except ImportError as exc:
        raise OSError("the 'datasets' package is not installed (pip install 'silverlabel[hf]')") from exc
    import datasets

    parts = datasets.load_dataset("stanfordnlp/imdb")
    frames = [parts[s].to_pandas().assign(split=s) for s in ("train", "test")]
    df = pd.concat(frames, ignore_index=True)
    return pd.DataFrame(
        {"item": df.index.astype(str), "text": df["text"], "label": df["label"].map({0: "negative", 1: "positive"})}
    )


def _ecommerce_real() -> pd.DataFrame:
    import urllib.request

    url = "https://zenodo.org/records/3355823/files/ecommerceDataset.csv?download=1"
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - fixed https URL
        df = pd.read_csv(resp, header=None, names=["label", "text"])
    df = df.dropna().reset_index(drop=True)
    return pd.DataFrame({"item": df.index.astype(str), "text": df["text"], "label": df["label"]})


register_preset(
    Preset(
        name="imdb",
        paper_dataset="IMDB",
        task="Classify the sentiment of the movie review as positive or negative.",
        label_names=("negative", "positive"),
        real_loader=_imdb_real,
        real_source="Hugging Face hub stanfordnlp/imdb",
    )
)
register_preset(
    Preset(
        name="toxic",
        paper_dataset="Toxic (Davidson et al. 2017)",
        task="Classify the tweet as hate speech, offensive language, or neither.",
        label_names=("hate speech", "offensive language", "neither"),
        real_loader=None,  # the vendored file is the real dataset
        real_source="Davidson et al. 2017, t-davidson/hate-speech-and-offensive-language",
    )
)
register_preset(
    Preset(
        name="ecommerce",
        paper_dataset="E-commerce",
        task="Classify the product description into its product category.",
        label_names=("Household", "Books", "Clothing & Accessories", "Electronics"),
        real_loader=_ecommerce_real,
        real_source="Zenodo record 3355823, ecommerceDataset.csv",
        stand_in_task="Classify the clothing review by the store department of the product it reviews.",
    )
)
register_preset(
    Preset(
        name="manifestos",
        paper_dataset="Manifestos",
        task=manifesto.TASK,
        label_names=manifesto.LABELS,
        real_loader=manifesto.load_real,  # MANIFESTO_CORPUS (a local download) or MANIFESTO_API_KEY
        real_source="Manifesto Project corpus (MANIFESTO_CORPUS download or MANIFESTO_API_KEY); docs/manifestos.md",
        stand_in_task=(
            "Classify the statement from a 2016 US presidential debate by who said it: the Democratic "
            "candidate, the Republican candidate, or a Moderator."
        ),
        stand_in_periods=(("1st", "2016-09-26"), ("VP", "2016-10-04"), ("2nd", "2016-10-09"), ("3rd", "2016-10-19")),
    )
)


def _sources() -> dict:
    return json.loads(resources.files("silverlabel.presets").joinpath("SOURCES.json").read_text())


def offline_mode() -> bool:
    """True when the network must not be tried (tests, the demo, HF_HUB_OFFLINE=1, SILVERLABEL_OFFLINE=1)."""
    return any(os.environ.get(v, "").strip() not in ("", "0") for v in ("SILVERLABEL_OFFLINE", "HF_HUB_OFFLINE"))


def load_preset(name: str, *, offline: bool | None = None) -> Dataset:
    """Load a paper dataset: the real source when reachable, otherwise the shipped stand-in (and say which)."""
    if name not in PRESETS:
        raise SilverlabelError(f"unknown dataset preset '{name}'; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    offline = offline_mode() if offline is None else offline
    if preset.real_loader is not None and not offline:
        try:
            frame = preset.real_loader()
        except SilverlabelError:  # a source the user named is broken: say so rather than fall back
            raise
        except Exception as exc:  # any network or hub failure falls back to the shipped data, loudly
            log.warning("%s: real source (%s) not reachable (%s); using the offline stand-in", name,
                        preset.real_source, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
        else:
            prov = Provenance(source=frame.attrs.get("source", preset.real_source), real=True,
                              paper_dataset=preset.paper_dataset, note=frame.attrs.get("note", ""))
            return _from_frame(frame, name=name, label_names=list(preset.label_names), task=preset.task,
                               provenance=prov, where=preset.real_source)
    if name not in _sources():  # a preset registered by the user ships no stand-in to fall back on
        why = "offline" if offline or preset.real_loader is None else "its real source failed (see the warning above)"
        raise SilverlabelError(f"dataset preset '{name}': {why} and no shipped stand-in; load it from a file "
                               "instead (silverlabel annotate FILE --text-column ... --label-column ...)")
    meta = _sources()[name]
    path = resources.files("silverlabel.presets").joinpath(meta["file"])
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise SilverlabelError(f"silverlabel/presets/{meta['file']} fails its checksum; the installation is damaged: "
                               "reinstall silverlabel (or regenerate it with scripts/vendor_presets.py)")
    frame = pd.read_parquet(io.BytesIO(blob))
    label_names = sorted(meta["class_counts"]) if not meta["real"] else list(preset.label_names)
    if meta["real"]:
        task = preset.task
    else:
        task = preset.stand_in_task or preset.task
        if preset.stand_in_task is None:
            label_names = list(preset.label_names)
    origin = meta["source"]
    if "/" in origin and ":" not in origin.split("/")[0]:  # a path on the machine that vendored it: the file's name
        origin = origin.rsplit("/", 1)[-1]
    prov = Provenance(
        source=f"{origin} (vendored in silverlabel/presets/{meta['file']})",
        real=bool(meta["real"]),
        paper_dataset=preset.paper_dataset,
        licence=meta.get("licence", ""),
        note=meta.get("note", ""),
    )
    if preset.stand_in_periods and "period" in frame:
        order = dict(preset.stand_in_periods)
        frame = frame.assign(period=frame["period"].map(lambda v: order.get(v, v)))
    return _from_frame(frame, name=name, label_names=label_names, task=task, provenance=prov, where=meta["file"])


# --------------------------------------------------------------------------------------------------- files

def _load_hf(spec: str, *, split: str | None) -> pd.DataFrame:
    try:
        import datasets
    except ImportError:
        raise SilverlabelError(f"'{spec}' needs the Hugging Face datasets package: pip install 'silverlabel[hf]'")
    try:
        if Path(spec).is_dir():
            loaded = datasets.load_from_disk(spec)
        else:
            loaded = datasets.load_dataset(spec)
    except Exception as exc:
        raise SilverlabelError(f"Hugging Face dataset '{spec}' could not be loaded: {str(exc).splitlines()[0]}") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = [split] if split else list(loaded.keys())
        missing = [n for n in names if n not in loaded]
        if missing:
            raise SilverlabelError(f"'{spec}' has no split '{missing[0]}'; it has {', '.join(loaded.keys())}")
        frames = []
        for n in names:
            label_feature = loaded[n].features
            frame = loaded[n].to_pandas()
            frames.append(_decode_class_labels(frame, label_feature))
        return pd.concat(frames, ignore_index=True)
    return _decode_class_labels(loaded.to_pandas(), loaded.features)


def _decode_class_labels(frame: pd.DataFrame, features) -> pd.DataFrame:
    """Turn ClassLabel integer columns into their names, so prompts see words, not numbers."""
    for col, feat in features.items():
        names = getattr(feat, "names", None)
        if names and col in frame:
            frame[col] = frame[col].map(lambda i, n=names: n[i] if 0 <= i < len(n) else None)
    return frame


def load_dataset(
    source: str,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    label_names: list[str] | None = None,
    task: str | None = None,
    name: str | None = None,
    encoding: str = "utf-8",
    hf_split: str | None = None,
    offline: bool | None = None,
) -> Dataset:
    """Load a preset name, a CSV/TSV/JSONL/JSON/Parquet file, or a Hugging Face dataset (``hf:NAME`` or a
    directory written by ``save_to_disk``), mapping its columns to text and label."""
    if source in PRESETS and not Path(source).exists():
        ds = load_preset(source, offline=offline)
        if task:
            ds.task = task
        return ds
    if source.startswith("hf:") or (Path(source).is_dir() and (Path(source) / "dataset_info.json").exists()
                                   or Path(source).is_dir() and (Path(source) / "dataset_dict.json").exists()):
        spec = source[3:] if source.startswith("hf:") else source
        frame = _load_hf(spec, split=hf_split)
        where = f"Hugging Face dataset {spec}"
    else:
        path = Path(source)
        if not path.exists():
            hint = f"; presets are {', '.join(PRESETS)}" if os.sep not in source and "." not in source else ""
            raise SilverlabelError(f"{source}: no such file{hint}")
        if path.is_dir():
            raise SilverlabelError(f"{source}: is a folder, not a data file (a Hugging Face save_to_disk folder "
                                   "holds dataset_info.json)")
        frame = read_table(path, encoding=encoding)
        where = str(path)
    for col, flag in ((text_column, "--text-column"), (label_column, "--label-column"), (id_column, "--id-column")):
        if col is not None and col not in frame.columns:
            raise SilverlabelError(
                f"{where}: no column '{col}' (given by {flag}); columns are: {', '.join(map(str, frame.columns))}"
            )
    text_column = text_column or guess_column(frame, TEXT_COLUMNS, "text", where)
    label_column = label_column or guess_column(frame, ("label", "labels", "class", "category", "target"), "label",
                                                where)
    items = frame[id_column].astype(str) if id_column else pd.Series(np.arange(len(frame)).astype(str))
    renamed = pd.DataFrame({"item": items.to_numpy(), "text": frame[text_column].to_numpy(),
                            "label": frame[label_column].to_numpy()})
    prov = Provenance(source=where, real=True)
    return _from_frame(renamed, name=name or Path(source.removeprefix("hf:")).stem.split(".")[0],
                       label_names=label_names, task=task or DEFAULT_TASK, provenance=prov, where=where)


TEXT_COLUMNS = ("text", "sentence", "tweet", "review", "content")  # tried in order when no text column is named


def guess_column(frame: pd.DataFrame, candidates: tuple[str, ...], role: str, where: str) -> str:
    lower = {str(c).lower(): c for c in frame.columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    raise SilverlabelError(
        f"{where}: no {role} column found; pass --{role}-column, one of: {', '.join(map(str, frame.columns))}"
    )


def _label_strings(values: pd.Series, where: str) -> pd.Series:
    """Labels as strings, refusing NaN and mixed number/word columns (a sign of a shifted or wrong column)."""
    missing = values.isna()
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise SilverlabelError(f"{where}: row {row + 1} has no label; fill it or drop the row")
    as_str = values.map(lambda v: str(v).strip() if not isinstance(v, float) or not v.is_integer() else str(int(v)))
    numeric = as_str.str.fullmatch(r"-?\d+(\.\d+)?")
    if numeric.any() and not numeric.all():
        row = int(np.flatnonzero(~numeric.to_numpy())[0]) if numeric.mean() > 0.5 else int(
            np.flatnonzero(numeric.to_numpy())[0])
        raise SilverlabelError(
            f"{where}: the label column mixes numbers and words (row {row + 1}: '{as_str.iloc[row]}'); "
            "use one kind of label throughout"
        )
    return as_str


def _from_frame(frame: pd.DataFrame, *, name: str, label_names: list[str] | None, task: str,
                provenance: Provenance, where: str) -> Dataset:
    if len(frame) == 0:
        raise SilverlabelError(f"{where}: the dataset is empty; it needs labelled rows")
    texts = frame["text"]
    bad = texts.isna() | (texts.astype(str).str.strip() == "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise SilverlabelError(f"{where}: row {row + 1} has an empty text; fill it or drop the row")
    long = (texts.astype(str).str.len() > MAX_TEXT_CHARS).to_numpy()
    if long.any():
        row = int(np.flatnonzero(long)[0])
        raise SilverlabelError(
            f"{where}: row {row + 1} has a text of {len(str(texts.iloc[row])):,} characters (at most "
            f"{MAX_TEXT_CHARS:,}); an unclosed quote can swallow the rest of a CSV into one cell: fix or shorten it")
    labels = _label_strings(frame["label"], where)
    found = sorted(labels.unique(), key=lambda s: (0, float(s), s) if _is_number(s) else (1, 0.0, s))
    if label_names is None:
        label_names = found
    else:
        unknown = sorted(set(found) - set(label_names))
        if unknown:
            raise SilverlabelError(f"{where}: label '{unknown[0]}' is not in the label names {label_names}")
    if len(label_names) > MAX_CLASSES:
        raise SilverlabelError(
            f"{where}: the label column has {len(label_names)} distinct values (at most {MAX_CLASSES}); "
            "is --label-column the right column?"
        )
    if len(set(found)) < 2:
        raise SilverlabelError(f"{where}: every row has the label '{found[0]}'; a classifier needs 2 or more classes")
    # a registered preset's loader may leave ids out: row numbers then, as for a file without --id-column
    items = frame["item"].astype(str) if "item" in frame else pd.Series([str(i) for i in range(len(frame))])
    dup = items.duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise SilverlabelError(f"{where}: row {row + 1} repeats the id '{items.iloc[row]}'; ids must be unique")
    index = {n: i for i, n in enumerate(label_names)}
    periods = frame["period"].astype(str).tolist() if "period" in frame else None
    return Dataset(name=name, items=items.tolist(), texts=texts.astype(str).tolist(),
                   labels=labels.map(index).to_numpy(dtype=np.int64), label_names=list(label_names), task=task,
                   provenance=provenance, periods=periods)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------------- splits
