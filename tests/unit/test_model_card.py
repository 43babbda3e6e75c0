"""The model card's sections for what the integration test's gold-only study does not reach: a student trained on
a mitigation of a teacher's labels, a collapse to one class, and a study run without bootstrap intervals."""

import huggingface_hub

from silverlabel.students.saved import MINORITY_F1, model_card


def _record(**kw):
    spec = {"kind": "mitigation", "policy": "entropy", "budget": 0.05, "action": "replace", "options": {},
            "teacher": {"uri": "llamacpp:qwen2.5-0.5b", "k_shot": 3, "demo_seeds": [0]}}
    return {"study": "s", "run_id": "toxic-entropy-r1", "dataset": "toxic", "label_source": "entropy@5%:qwen",
            "source_spec": spec, "prompt_hash": "0123456789ab", "student": "minilm", "base_model": "org/base",
            "size": 200, "seed": 2, "train_config": {"model": "minilm", "epochs": 3}, "data_fingerprint": "f00d",
            "split": {"train": 200, "validation": 20, "test": 300}, "split_seed": 0, "n_train": 198,
            "accounting": {"gold_used": 10, "dropped_failed": 2}, "best_epoch": 3,
            "label_names": ["a", "b"], **kw}


def _row(**kw):
    return {"seeds": [1, 2], "n_test": 300, "accuracy_mean": 0.5, "macro_f1_mean": 0.4,
            "accuracy_per_seed": [0.4, 0.6], "macro_f1_per_seed": [0.3, 0.5], "krippendorff_alpha": 0.25,
            "p_unchanged": 0.8, "one_class": False, "teacher_accuracy": 0.7,
            "per_class": {"a": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 150},
                          "b": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 150}},
            "ci": {"accuracy_mean": [0.45, 0.55], "macro_f1_mean": [0.35, 0.45]}, **kw}


def test_a_mitigated_students_card_names_the_teacher_the_policy_and_the_gold_it_spent():
    card = huggingface_hub.ModelCard(model_card(_record(), _row(), 2, one_class=False))
    assert card.data.base_model == "org/base"
    text = " ".join(card.text.split())
    assert "teacher `llamacpp:qwen2.5-0.5b`, 3-shot, prompt 0123456789ab" in text
    assert "| mitigation | entropy, gold budget 0.05 (10 gold labels spent) |" in text
    assert "198 (2 left out: the teacher failed on them)" in text
    assert "| accuracy | 0.6000 | 0.5000 (0.4500–0.5500) |" in text  # seed 2 is the second of the seeds
    assert "agree with gold on 70.0 % of them" in text
    assert "None: no collapse to one class, and every class's test F1 is at least 0.30" in text


def test_collapse_and_weak_classes_are_warned_and_missing_intervals_are_left_out():
    row = _row(ci={}, one_class=True, per_class={"a": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 9},
                                                  "b": {"precision": 0.9, "recall": 1.0, "f1": 0.95, "support": 291}})
    text = " ".join(model_card(_record(), row, 1, one_class=True).split())
    assert "Collapse: this student predicts a single class" in text
    assert f"Class 'a': F1 0.00 on 9 test items (mean over the seeds; below {MINORITY_F1:.2f})" in text
    assert "Class 'b'" not in text
    assert "| accuracy | 0.4000 | 0.5000 |" in text and "bootstrap interval" not in text
