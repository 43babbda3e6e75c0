"""The stored teacher labels of the coverage bench cannot drift silently: one batch of items recomputed with the
real shipped teacher (Qwen2.5-0.5B, llama.cpp, the same prompt) must give the stored P_S, and the model and prompt must
be the ones the metadata records."""

import json

import numpy as np
import pandas as pd
import pytest

from bench.coverage import DATA, META
from bench.make_coverage_data import TEACHER, population
from tests.helpers import require

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_a_batch_per_dataset_recomputed_by_the_real_teacher_matches():
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    from silverlabel.assets import GGUF_ASSETS
    from silverlabel.teachers import get_teacher

    meta = json.loads(META.read_text())
    frame = pd.read_parquet(DATA)
    assert meta["model_sha256"] == GGUF_ASSETS["qwen2.5-0.5b"].sha256
    teacher = get_teacher(TEACHER, chat=True)
    try:
        for name, info in meta["datasets"].items():
            ds, chosen, prompt, demo_items = population(name, meta["n_items"])
            assert teacher.cache_key(prompt) == info["prompt_key"] and demo_items == info["demo_items"]
            sub = ds.subset(chosen)
            stored = frame[frame["dataset"] == name].set_index("item")
            assert list(stored.index) == [str(i) for i in sub.items]  # same items in the same order
            # llama.cpp's numbers depend on the batch an item is scored in (kernels differ with batch shape, up to
            # a few percent of P_S), so recompute the first batch exactly as it was made: the first 16 texts, the
            # first scoring after the prompt was prepared
            batch = teacher.batch_items
            texts = sub.texts[:batch]
            assert len(set(texts)) == batch
            ann = teacher.annotate(sub.items[:batch], texts, prompt)
            cols = [f"p:{n}" for n in info["label_names"]]
            want = stored.loc[[str(i) for i in sub.items[:batch]]]
            assert np.allclose(ann.frame[cols].to_numpy(), want[cols].to_numpy(), atol=1e-4), name
            assert list(ann.frame["label"]) == list(want["label"])
    finally:
        teacher.close()
