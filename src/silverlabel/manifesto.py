"""The Manifesto Project's coded quasi-sentences, as the paper's three-class Manifestos task.

Two real sources, both giving one row per quasi-sentence with its CMP code and the manifesto's party and
election date:

- a local download (``MANIFESTO_CORPUS``: a CSV file or a folder of them): the per-document CSVs the project's
  website serves (``text``, ``cmp_code``, ``eu_code``; party and date in the file name ``61320_201211.csv``), or
  a corpus manifestoR wrote with ``write.csv(as.data.frame(corpus, with.meta = TRUE))`` (``text``, ``cmp_code``,
  ``eu_code``, ``pos``, ``manifesto_id``, ``party``, ``date``, ...);
- the project's API (``MANIFESTO_API_KEY``; the documents in ``MANIFESTO_KEYS``, corpus version
  ``MANIFESTO_CORPUS_VERSION`` or the newest tagged one).

What the paper states is only "Manifestos, 3 classes, temporal split". The rest is decided here and written down
in ``docs/manifestos.md``: the three classes are the left / right / neutral sides of the RILE scale (Laver & Budge
1992, the Manifesto Project's own left-right index): its 13 right and 13 left categories, everything else coded is
neutral; headings (``H``) and uncoded rows are dropped and counted. The temporal split is on the election date
(:func:`silverlabel.splits.split` tests on the newest elections and trains on older ones).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from .errors import SilverlabelError

log = logging.getLogger(__name__)

API_ROOT = "https://manifesto-project.wzb.eu/api/v1"
LABELS = ("left", "neutral", "right")
TASK = ("Classify the quasi-sentence from a party's election manifesto by its side on the left-right scale: "
        "left, right, or neutral (neither).")
# The RILE index's categories (Laver & Budge 1992; the Manifesto Project's `rile` variable)
RILE_RIGHT = frozenset({104, 201, 203, 305, 401, 402, 407, 414, 505, 601, 603, 605, 606})
RILE_LEFT = frozenset({103, 105, 106, 107, 202, 403, 404, 406, 412, 413, 504, 506, 701})
# The US Democratic (61320) and Republican (61620) platforms of four elections: English, and the same country as
# the offline stand-in. Keys the corpus lacks are reported, not fatal.
DEFAULT_KEYS = tuple(f"{party}_{date}" for date in ("200811", "201211", "201611", "202011")
                     for party in ("61320", "61620"))
_CODE = re.compile(r"^(\d{3})(\d|\.\d+)?$")  # 201, 201.1 (handbook 5 sub-categories), 2011 (old CEE sub-codes)
_KEY = re.compile(r"^(\d+)_(\d{6})")


def rile_class(code) -> str | None:
    """left / right / neutral for a CMP code; None for a heading or an uncoded row (which are dropped)."""
    if code is None or (isinstance(code, float) and code != code):
        return None
    text = str(code).strip()
    if text in ("", "NA", "H", "h"):
        return None
    if text in ("0", "00", "000"):
        return "neutral"  # 000: coded, but no category applies
    m = _CODE.match(text)
    if m is None:
        return None
    parent = int(m.group(1))
    return "right" if parent in RILE_RIGHT else "left" if parent in RILE_LEFT else "neutral"


def to_task(rows: pd.DataFrame, *, where: str) -> pd.DataFrame:
    """Quasi-sentences with ``cmp_code``, ``manifesto_id``, ``date`` (and ``pos``) as the task's item / text /
    label / period table; what is dropped is counted in ``attrs['note']``."""
    for col in ("text", "cmp_code", "manifesto_id", "date"):
        if col not in rows:
            raise SilverlabelError(f"{where}: no column '{col}'; columns are: {', '.join(map(str, rows.columns))}")
    rows = rows.reset_index(drop=True)
    if "pos" not in rows:
        rows = rows.assign(pos=rows.groupby("manifesto_id").cumcount() + 1)
    label = rows["cmp_code"].map(rile_class)
    text = rows["text"].fillna("").astype(str).str.strip()
    heading = rows["cmp_code"].astype(str).str.strip().str.upper().eq("H")
    keep = label.notna() & text.ne("")
    out = pd.DataFrame({"item": rows["manifesto_id"].astype(str) + ":" + rows["pos"].astype(str),
                        "text": text, "label": label, "period": rows["date"].astype(str).str.slice(0, 6),
                        "party": rows.get("party", rows["manifesto_id"].astype(str).str.split("_").str[0])})[keep]
    out = out.reset_index(drop=True)
    counts = out["label"].value_counts().to_dict()
    out.attrs["note"] = (
        f"{len(rows)} quasi-sentences from {rows['manifesto_id'].nunique()} manifestos "
        f"({', '.join(sorted(out['period'].unique()))}); kept {len(out)} "
        f"({', '.join(f'{k} {counts.get(k, 0)}' for k in LABELS)}), dropped {int(heading.sum())} headings and "
        f"{int((~keep & ~heading).sum())} uncoded or empty rows; labels: RILE right/left categories, other codes "
        "neutral")
    if out.empty:
        raise SilverlabelError(f"{where}: no coded quasi-sentences (every row is a heading, uncoded or empty)")
    return out


# ---------------------------------------------------------------------------------------------- download


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=["", "NA"])
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise SilverlabelError(f"{path}: not a readable Manifesto Project CSV ({str(exc).strip()[:120]})") from None
    frame = frame.loc[:, [c for c in frame.columns if not str(c).startswith("Unnamed")]]  # R's row names
    if "manifesto_id" not in frame:
        m = _KEY.match(path.stem)
        if m is None:
            raise SilverlabelError(
                f"{path}: no manifesto_id column and the file name is not PARTY_DATE.csv (e.g. 61320_201211.csv); "
                "keep the website's file name or export the corpus with manifestoR's as.data.frame(with.meta=TRUE)")
        frame = frame.assign(manifesto_id=f"{m.group(1)}_{m.group(2)}", party=m.group(1), date=m.group(2))
    if "date" not in frame:
        frame = frame.assign(date=frame["manifesto_id"].str.split("_").str[1])
    return frame


def read_download(path: str | Path) -> pd.DataFrame:
    """The task table from a local download: one CSV (manifestoR's export or one website document) or a folder of
    the website's per-document CSVs."""
    path = Path(path)
    if not path.exists():
        raise SilverlabelError(f"{path}: no such file or folder (MANIFESTO_CORPUS); download the coded documents "
                               "from manifesto-project.wzb.eu as CSV, or set MANIFESTO_API_KEY instead")
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise SilverlabelError(f"{path}: the folder holds no .csv files")
    out = to_task(pd.concat([_read_csv(f) for f in files], ignore_index=True), where=str(path))
    out.attrs["source"] = f"Manifesto Project corpus, local download {path}"
    return out


# --------------------------------------------------------------------------------------------------- API


def _get(client, root: str, function: str, params: list[tuple[str, str]]) -> dict:
    response = client.get(f"{root}/{function}", params=params)
    if response.status_code != 200:
        try:
            detail = response.json().get("error", "")
        except ValueError:
            detail = response.text[:120]
        hint = " (check MANIFESTO_API_KEY)" if response.status_code == 401 else ""
        raise SilverlabelError(f"Manifesto Project API {function}: HTTP {response.status_code} {detail}{hint}")
    return response.json()


def fetch_api(keys: list[str] | tuple[str, ...] = DEFAULT_KEYS, *, api_key: str, version: str | None = None,
              root: str = API_ROOT, timeout: float = 60.0) -> pd.DataFrame:
    """The task table from the API: metadata for ``keys`` (PARTY_DATE), then the texts and codes of those that
    have annotated documents. Missing keys and documents are logged and counted, never silent."""
    try:
        import httpx
    except ImportError:
        raise SilverlabelError("the Manifesto Project API needs httpx: pip install 'silverlabel[manifesto]'") from None
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        if version is None:
            versions = _get(client, root, "list_metadata_versions", [("tag", "true")])["versions"]
            tagged = sorted((v for v in versions if v.get("tag")), key=lambda v: v["name"])
            if not tagged:
                raise SilverlabelError("Manifesto Project API: list_metadata_versions lists no tagged version; set "
                                       "MANIFESTO_CORPUS_VERSION")
            version = tagged[-1]["tag"]
        auth = [("api_key", api_key), ("version", version)]
        meta = _get(client, root, "metadata", auth + [("keys[]", k) for k in keys])
        missing = list(meta.get("missing_items", []))
        docs = [m for m in meta["items"] if m.get("manifesto_id") and str(m.get("annotations")).lower() == "true"]
        unannotated = [f"{m['party_id']}_{m['election_date']}" for m in meta["items"] if m not in docs]
        if not docs:
            raise SilverlabelError(f"Manifesto Project API: none of the {len(keys)} keys has an annotated document "
                                   f"in corpus version {version} (missing: {', '.join(missing) or 'none'})")
        texts = _get(client, root, "texts_and_annotations", auth + [("keys[]", m["manifesto_id"]) for m in docs])
    missing += texts.get("missing_items", [])
    if missing or unannotated:
        log.warning("Manifesto Project API: %d keys missing (%s), %d without annotations (%s)", len(missing),
                    ", ".join(missing), len(unannotated), ", ".join(unannotated))
    dates = {m["manifesto_id"]: str(m["election_date"]) for m in docs}
    parties = {m["manifesto_id"]: str(m["party_id"]) for m in docs}
    rows = []
    for doc in texts["items"]:
        for pos, q in enumerate(doc["items"], start=1):
            rows.append({"text": q.get("text", q.get("content")), "cmp_code": q.get("cmp_code", q.get("code")),
                         "eu_code": q.get("eu_code"), "pos": pos, "manifesto_id": doc["key"],
                         "party": parties.get(doc["key"]), "date": dates.get(doc["key"])})
    out = to_task(pd.DataFrame(rows, columns=["text", "cmp_code", "eu_code", "pos", "manifesto_id", "party", "date"]),
                  where=f"Manifesto Project API ({root})")
    out.attrs["source"] = f"Manifesto Project API {root}, corpus version {version}"
    out.attrs["note"] += f"; {len(missing)} keys missing, {len(unannotated)} without annotations"
    return out


def load_real() -> pd.DataFrame:
    """The real data from whichever source the environment names (the download first); OSError when neither is
    set, so the preset falls back to its stand-in and says so."""
    local = os.environ.get("MANIFESTO_CORPUS", "").strip()
    if local:
        return read_download(local)
    key = os.environ.get("MANIFESTO_API_KEY", "").strip()
    if key:
        keys = [k.strip() for k in os.environ.get("MANIFESTO_KEYS", "").split(",") if k.strip()] or DEFAULT_KEYS
        return fetch_api(keys, api_key=key, version=os.environ.get("MANIFESTO_CORPUS_VERSION") or None,
                         root=os.environ.get("MANIFESTO_API_ROOT", API_ROOT).rstrip("/"))
    raise OSError("neither MANIFESTO_CORPUS (a local download) nor MANIFESTO_API_KEY is set")
