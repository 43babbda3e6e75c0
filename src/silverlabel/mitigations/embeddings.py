"""Sentence embeddings for the policies that model the text (``learned``, ``confident`` with cross-validation).

The shipped MiniLM encoder (all-MiniLM-L6-v2, the offline student) mean-pooled over real tokens and L2-normalised,
as sentence-transformers does for that model. Runs on the CPU in fixed batches in the given order, so the same
texts give the same vectors; results are cached on disk by a hash of the texts and the model's weights.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np

from ..assets import STUDENT_ASSETS, cache_dir, student_path
from ..errors import SilverlabelError
from ..files import atomic_save_npy

log = logging.getLogger(__name__)


def _key(texts: Sequence[str], model: str, max_length: int) -> str:
    from ..assets import STUDENT_ASSETS

    digest = hashlib.sha256(f"{model}:{STUDENT_ASSETS[model].sha256}:{max_length}".encode())
    for t in texts:
        digest.update(hashlib.sha256(t.encode("utf-8")).digest())
    return digest.hexdigest()[:24]


def sentence_embeddings(texts: Sequence[str], *, model: str = "minilm", max_length: int = 128,
                        batch_size: int = 64, cache: bool = True) -> np.ndarray:
    """(n, d) float32 unit vectors for ``texts`` from a shipped encoder (``STUDENT_ASSETS`` name)."""
    if model not in STUDENT_ASSETS:
        raise SilverlabelError(f"no shipped encoder '{model}'; choose one of {', '.join(STUDENT_ASSETS)}")
    texts = [str(t) for t in texts]
    path = cache_dir() / "embeddings" / f"{_key(texts, model, max_length)}.npy"
    if cache and path.exists():
        return np.load(path)
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    folder = student_path(model)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        encoder = AutoModel.from_pretrained(folder).to("cpu").eval()
    finally:
        transformers.logging.set_verbosity(verbosity)
    log.info("embedding %d texts with %s", len(texts), model)
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state
            weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    vectors = np.concatenate(out).astype(np.float32) if out else np.zeros((0, encoder.config.hidden_size),
                                                                             np.float32)
    if cache:
        atomic_save_npy(path, vectors)  # several processes may race to write it
    return vectors


def features_for(ctx, *, embeddings=None) -> np.ndarray:
    """The policy's embeddings: given ones (checked for shape) or computed from the records' text."""
    if embeddings is None:
        if "text" not in ctx.records.columns:
            raise SilverlabelError("records have no 'text' column to embed; pass options={'embeddings': array}")
        return sentence_embeddings(ctx.records["text"].astype(str).tolist())
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or len(emb) != ctx.n:
        raise SilverlabelError(f"embeddings have shape {emb.shape}; need ({ctx.n}, d), one row per record")
    return emb
