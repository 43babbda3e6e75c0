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
            diff = np.abs(ann.frame[cols].to_numpy() - want[cols].to_numpy())
            # The stored data were made on a machine whose llama.cpp system info was not recorded, and the
            # quantised kernels differ by CPU (AVX2 against AVX-512, repacked Q4 blocks). Measured on the same 16
            # items: this AVX2 EPYC (no AVX-512) max |dP_S| 0.084 (toxic) / 0.022 (imdb), mean 0.019 / 0.0076;
            # CI's machine max 0.035 (toxic). On the machine that made them the check was atol 1e-4 and passed. So across machines the check is: mean |dP_S| under 0.04 (twice the worst
            # measured mean), max under 0.15 (the worst measured max, 0.084, plus its own size again rounded up),
            # and the same label wherever the stored P_S has a margin over 2 x 0.15 between its top two labels,
            # where no kernel noise of that size can flip it. A different prompt, model or scoring rule moves
            # P_S by far more (the cache key and sha256 above catch the first two outright).
            assert diff.mean() < 0.04 and diff.max() < 0.15, (name, diff.mean(), diff.max())
            top2 = np.sort(want[cols].to_numpy(), axis=1)[:, -2:]
            sure = (top2[:, 1] - top2[:, 0]) > 0.30
            got, stored_labels = ann.frame["label"].to_numpy(), want["label"].to_numpy()
            assert (got[sure] == stored_labels[sure]).all(), name
            assert (got == stored_labels).mean() >= 0.75, name
    finally:
        teacher.close()
