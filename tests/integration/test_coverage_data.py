"""The stored teacher labels of the coverage bench cannot drift silently: a few items recomputed with the real
shipped teacher (Qwen2.5-0.5B, llama.cpp, the same prompt) must give the stored P_S, and the model and prompt must
be the ones the metadata records."""

import json

import numpy as np
import pandas as pd
import pytest

from bench.coverage import DATA, META
from bench.make_coverage_data import TEACHER, population
from tests.helpers import require

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_three_items_per_dataset_recomputed_by_the_real_teacher_match():
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
            pick = np.random.default_rng(0).choice(len(sub), 3, replace=False)
            ann = teacher.annotate([sub.items[i] for i in pick], [sub.texts[i] for i in pick], prompt)
            cols = [f"p:{n}" for n in info["label_names"]]
            got = ann.frame[cols].to_numpy()
            want = stored.loc[[str(sub.items[i]) for i in pick], cols].to_numpy()
            assert np.allclose(got, want, atol=2e-3), (name, got, want)
            assert list(ann.frame["label"]) == list(stored.loc[[str(sub.items[i]) for i in pick], "label"])
    finally:
        teacher.close()
