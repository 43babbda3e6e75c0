"""Saved students that explain themselves.

A model folder written by ``train --save-model`` (or a study's ``save_model = true``) is a plain Hugging Face
folder, so ``transformers.pipeline("text-classification", model=DIR)`` loads it with the right label names; beside
the weights it holds silverlabel's record of how the student was made (``silverlabel.json``: the label source, the
data and its split, the recipe and seed, and the training and validation items, which ``estimate --predictions``
reads to refuse a surrogate that saw the gold sample) and a model card (``README.md``, the Hugging Face format,
rendered by ``huggingface_hub`` from ``templates/model_card.md.j2``) with the run's test metrics, its stability
across the seeds it was trained beside, the teacher's accuracy, and the report's warnings.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..cache import text_hash
from ..errors import SilverlabelError
from ..files import atomic_write_text

log = logging.getLogger(__name__)

RECORD = "silverlabel.json"
CARD = "README.md"
RECORD_FORMAT = 1
MINORITY_F1 = 0.30  # a class whose test F1 is below this gets a warning in the card: its predictions are unreliable
TEMPLATE = Path(__file__).with_name("templates") / "model_card.md.j2"


def finish_saved_model(folder: str | Path, *, label_names: list[str], record: dict) -> None:
    """Name the labels in the folder's config.json (``id2label``, ``label2id``: the trainer knows only class
    indices) and write silverlabel's record beside the weights. Called by the driver once a run is done."""
    from transformers import AutoConfig

    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    config.save_pretrained(folder)
    atomic_write_text(folder / RECORD, json.dumps({"format": RECORD_FORMAT, **record, "label_names": label_names},
                                                  indent=1, default=str))


def training_record(items: list[str], texts: list[str], val_items: list[str], val_texts: list[str]) -> dict:
    """What a student was fitted or selected on, by item id and by text hash (ids differ between files; the
    text does not), for the overlap check of ``estimate --predictions``."""
    return {"train_items": list(items), "validation_items": list(val_items),
            "seen_text_hashes": sorted({text_hash(t) for t in [*texts, *val_texts]})}


@dataclass
class SavedStudent:
    """A model folder to predict with: its label names and, when silverlabel wrote it, its record."""

    folder: Path
    label_names: list[str]
    record: dict | None

    @property
    def max_length(self) -> int | None:
        return ((self.record or {}).get("train_config") or {}).get("max_length")

    def seen_text_hashes(self) -> set[str]:
        return set((self.record or {}).get("seen_text_hashes", []))


def read_saved(folder: str | Path) -> SavedStudent:
    """A saved student's folder; a plain Hugging Face classifier is allowed too (no record: a warning, and no
    checks that need one)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise SilverlabelError(f"{folder}: no config.json, so not a model folder; pass a folder written by "
                               "`silverlabel train --save-model`, a study folder, or a Hugging Face classifier")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)] if id2label else []
    record = None
    if (folder / RECORD).is_file():
        try:
            record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SilverlabelError(f"{folder / RECORD}: not valid JSON ({exc}); delete it to use the folder as a "
                                   "plain model") from None
        names = list(record.get("label_names") or names)
    else:
        log.warning("%s holds no %s: a plain Hugging Face model, used without silverlabel's record (no model "
                    "card checks, no gold-overlap check)", folder, RECORD)
    if not names:
        raise SilverlabelError(f"{folder}: config.json names no labels (id2label); save it with them")
    return SavedStudent(folder, names, record)


def _warnings(row: dict, preds_one_class: bool) -> list[str]:
    out = []
    if preds_one_class or row.get("one_class"):
        out.append("Collapse: this student predicts a single class on the test split, so its accuracy is that "
                   "class's share and its stability across seeds measures nothing.")
    for name, scores in (row.get("per_class") or {}).items():
        if scores.get("f1", 1.0) < MINORITY_F1:
            out.append(f"Class '{name}': F1 {scores['f1']:.2f} on {scores.get('support', '?')} test items (mean "
                       f"over the seeds; below {MINORITY_F1:.2f}): its predictions are unreliable.")
    return out


def model_card(record: dict, row: dict, seed: int, *, one_class: bool) -> str:
    """The model card of one saved run: ``row`` is its cell's summary in results.json (every seed), ``record``
    what the folder's silverlabel.json says."""
    from huggingface_hub import ModelCard, ModelCardData

    seeds = list(row.get("seeds", []))
    i = seeds.index(seed) if seed in seeds else None
    names = record["label_names"]
    data = ModelCardData(library_name="transformers", pipeline_tag="text-classification",
                         base_model=record.get("base_model"), tags=["silverlabel", "text-classification"])
    return str(ModelCard.from_template(
        data, template_str=TEMPLATE.read_text(encoding="utf-8"), record=record, row=row, seed=seed, names=names,
        accuracy=row["accuracy_per_seed"][i] if i is not None else None,
        macro_f1=row["macro_f1_per_seed"][i] if i is not None else None,
        warnings=_warnings(row, one_class), minority_f1=MINORITY_F1))


def write_model_card(folder: str | Path, row: dict, seed: int, *, one_class: bool) -> None:
    folder = Path(folder)
    record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    atomic_write_text(folder / CARD, model_card(record, row, seed, one_class=one_class))
