"""Student training speed on CPU: a plain ``transformers.Trainer`` script vs silverlabel's trainer, side by side.

Both train the shipped MiniLM on the same 1000 training texts of a shipped dataset with the paper's recipe
(3 epochs, AdamW, lr 2e-5, batch 16, weight decay 0.01, 5 % warm-up, max length 128, best validation macro-F1
checkpoint) and predict the same 500 test texts. (a) is what a user writes from the Trainer docs: every text
padded to max length, the default evaluation loop, a checkpoint saved per epoch so the best can be reloaded.
(b) is ``silverlabel.train_student``. Prints one JSON line of ratios measured in this one process (the machine is
noisy; compare only numbers from the same run), plus the time metrics take for 2000 items x 5 runs.

    python bench/train.py [--dataset imdb] [--n-train 1000] [--n-test 500] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import tempfile
import time

import numpy as np
import pandas as pd


def baseline(splits, *, epochs: int, seed: int) -> tuple[float, np.ndarray]:
    """The plain Trainer script: padding='max_length', default eval loop, best checkpoint by macro-F1."""
    import torch
    import transformers
    from sklearn.metrics import f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments)

    from silverlabel.students import resolve_model

    path = resolve_model("minilm")
    tok = AutoTokenizer.from_pretrained(path)

    class Texts(torch.utils.data.Dataset):
        def __init__(self, texts, labels):
            self.enc = tok(list(texts), truncation=True, padding="max_length", max_length=128)
            self.labels = labels

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            item = {k: torch.tensor(v[i]) for k, v in self.enc.items()}
            item["labels"] = torch.tensor(int(self.labels[i]))
            return item

    train = Texts(splits.train.texts, splits.train.labels)
    val = Texts(splits.validation.texts, splits.validation.labels)
    test = Texts(splits.test.texts, splits.test.labels)
    transformers.set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=splits.train.num_labels)

    def metrics(pred):
        return {"macro_f1": f1_score(pred.label_ids, pred.predictions.argmax(-1), average="macro")}

    steps = math.ceil(len(train) / 16) * epochs
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, num_train_epochs=epochs, learning_rate=2e-5, per_device_train_batch_size=16,
            weight_decay=0.01, warmup_steps=math.ceil(0.05 * steps), eval_strategy="epoch", save_strategy="epoch",
            load_best_model_at_end=True, metric_for_best_model="macro_f1", report_to=[], seed=seed,
            use_cpu=True, disable_tqdm=True, logging_strategy="no", save_total_limit=2)
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val, compute_metrics=metrics)
        start = time.perf_counter()
        trainer.train()
        preds = trainer.predict(test).predictions.argmax(-1)
        return time.perf_counter() - start, preds


def ours(splits, *, epochs: int, seed: int) -> tuple[float, np.ndarray]:
    from silverlabel.config import TrainConfig
    from silverlabel.students import train_student

    start = time.perf_counter()
    run = train_student(splits.train.texts, splits.train.labels, num_labels=splits.train.num_labels,
                        config=TrainConfig(model="minilm", epochs=epochs), seed=seed,
                        val_texts=splits.validation.texts, val_labels=splits.validation.labels,
                        test_texts=splits.test.texts)
    return time.perf_counter() - start, run.preds


def metrics_time(repeats: int = 20) -> float:
    from silverlabel.metrics import evaluate_table

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 2000)
    rows = [pd.DataFrame({"item": np.arange(2000), "run": r, "gold": gold,
                          "pred": np.where(rng.random(2000) < 0.8, gold, rng.integers(0, 3, 2000))})
            for r in range(5)]
    table = pd.concat(rows, ignore_index=True)
    evaluate_table(table)
    start = time.perf_counter()
    for _ in range(repeats):
        evaluate_table(table)
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    from sklearn.metrics import f1_score

    from silverlabel.data import load_preset, split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="imdb")
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    splits = split(load_preset(args.dataset, offline=True), n_train=args.n_train, n_test=args.n_test,
                   n_validation=args.n_train // 10, seed=0)
    examples = len(splits.train) * args.epochs
    t_base, p_base = baseline(splits, epochs=args.epochs, seed=args.seed)
    t_ours, p_ours = ours(splits, epochs=args.epochs, seed=args.seed)
    f1_base = f1_score(splits.test.labels, p_base, average="macro")
    f1_ours = f1_score(splits.test.labels, p_ours, average="macro")
    print(json.dumps({
        "dataset": args.dataset, "n_train": len(splits.train), "n_test": len(splits.test), "epochs": args.epochs,
        "baseline_examples_per_s": round(examples / t_base, 2), "silverlabel_examples_per_s": round(examples / t_ours, 2),
        "speedup": round(t_base / t_ours, 2), "baseline_seconds": round(t_base, 1), "silverlabel_seconds": round(t_ours, 1),
        "macro_f1_baseline": round(float(f1_base), 4), "macro_f1_silverlabel": round(float(f1_ours), 4),
        "macro_f1_delta": round(float(f1_ours - f1_base), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "metrics_ms_2000x5": round(metrics_time(), 2),
    }))


if __name__ == "__main__":
    main()
