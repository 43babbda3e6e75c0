"""The ``table:`` teacher: labels made elsewhere, read back by text, with every bad row a one-line error naming it
and every text the table lacks a counted failure."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy as scipy_entropy

from silverlabel.errors import SilverlabelError
from silverlabel.teachers import Demonstrations, Prompt, get_teacher

PROMPT = Prompt(task="t", label_names=("neg", "pos"), demonstrations=Demonstrations(seed=0, examples=()))


def _table(tmp_path, frame, name="t.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False) if name.endswith(".csv") else frame.to_parquet(path, index=False)
    return path


def test_reads_labels_and_p_s_and_counts_missing_texts_as_failed(tmp_path):
    frame = pd.DataFrame({"item": ["a", "b", "c"], "text": ["good", "bad", "meh"], "label": ["pos", "neg", None],
                          "p:neg": [0.2, 0.9, None], "p:pos": [0.8, 0.1, None], "prompt_tokens": [120, 130, 0]})
    teacher = get_teacher(f"table:{_table(tmp_path, frame, 't.parquet')}")
    ann = teacher.annotate(["x1", "x2", "x3", "x4"], ["bad", "good", "meh", "unseen"], PROMPT)
    assert ann.frame["label"][:2].tolist() == ["neg", "pos"] and ann.frame["label"][2:].isna().all()
    assert np.allclose(ann.probs()[:2], [[0.9, 0.1], [0.2, 0.8]])
    assert np.allclose(ann.frame["entropy"][:2], [scipy_entropy([0.9, 0.1]), scipy_entropy([0.2, 0.8])])
    assert ann.frame["prompt_tokens"].tolist() == [130, 120, 0, 0]
    assert ann.summary.failed == 2 and ann.frame["error"][3] == "not in t.parquet"
    # the label is the table's, even where it is not the argmax of its P_S (a guided choice can differ)
    odd = pd.DataFrame({"text": ["x"], "label": ["neg"], "p:neg": [0.4], "p:pos": [0.6]})
    assert get_teacher(f"table:{_table(tmp_path, odd)}").annotate(["i"], ["x"], PROMPT).frame["label"][0] == "neg"


def test_without_p_columns_a_label_is_certain_and_the_file_hash_keys_the_cache(tmp_path):
    path = _table(tmp_path, pd.DataFrame({"text": ["good"], "label": ["pos"]}))
    teacher = get_teacher(f"table:{path}")
    ann = teacher.annotate(["i"], ["good"], PROMPT)
    assert ann.probs().tolist() == [[0.0, 1.0]] and ann.frame["entropy"][0] == 0.0
    before = teacher.model_id
    path.write_text("text,label\ngood,neg\n")
    assert get_teacher(f"table:{path}").model_id != before


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"item": ["a"], "label": ["pos"]}), "no column 'text'"),
    (pd.DataFrame({"text": ["a"], "label": ["maybe"]}), "row 1: label 'maybe' is not one of ['neg', 'pos']"),
    (pd.DataFrame({"text": ["a", "a"], "label": ["pos", "neg"]}), "row 2: the same text has two labels"),
    (pd.DataFrame({"text": ["a"], "label": ["pos"], "p:neg": [0.5], "p:pos": [0.7]}),
     "row 1: the p:<label> columns are not a distribution"),
    (pd.DataFrame({"text": ["a"], "label": ["pos"], "p:pos": [1.0]}),
     "no column 'p:neg' beside its other p:<label> columns"),
])
def test_bad_rows_are_errors_naming_the_row(tmp_path, frame, message):
    teacher = get_teacher(f"table:{_table(tmp_path, frame)}")
    with pytest.raises(SilverlabelError, match=message.replace("[", r"\[").replace("]", r"\]")):
        teacher.prepare(PROMPT)


def test_a_missing_file_is_an_error():
    with pytest.raises(SilverlabelError, match="no such file"):
        get_teacher("table:/nonexistent/annotations.parquet")
