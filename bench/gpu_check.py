"""The GPU paths, checked side by side in one process: the student's fp16 training and the ``hf:`` teacher on CUDA.

CI has no GPU, so this is how the CUDA code is exercised when a GPU machine is at hand (docs/benchmarks.md has
the numbers). Student: the same seed trained with fp16 autocast and in fp32 on the GPU (and once on the CPU for
reference): macro-F1 must not move and fp16 must be faster. Teacher: the same items scored by the hf backend on
the CPU in float32 (the reference) and on the GPU in float32 and bfloat16: labels must agree and P_S stay close.
Without CUDA it runs only the CPU references and says so. Prints one JSON line.

    python bench/gpu_check.py [--student minilm] [--teacher smollm2-135m] [--n-teacher 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np


def student_runs(splits, model: str, epochs: int, cpu: bool) -> dict:
    import torch
    from sklearn.metrics import f1_score

    from silverlabel.config import TrainConfig
    from silverlabel.students import train_student

    def one(device: str, fp16: str, seed: int):
        run = train_student(splits.train.texts, splits.train.labels, num_labels=splits.train.num_labels,
                            config=TrainConfig(model=model, epochs=epochs, fp16=fp16), seed=seed, device=device,
                            val_texts=splits.validation.texts, val_labels=splits.validation.labels,
                            test_texts=splits.test.texts)
        f1 = float(f1_score(splits.test.labels, run.preds, average="macro"))
        return run, f1

    out: dict = {}
    examples = len(splits.train) * epochs
    devices = (["cuda"] if torch.cuda.is_available() else []) + (["cpu"] if cpu or not torch.cuda.is_available()
                                                               else [])
    preds = {}
    for device in devices:
        for fp16 in (("on", "off") if device == "cuda" else ("off",)):
            tag = f"{device}_{'fp16' if fp16 == 'on' else 'fp32'}"
            run, f1 = one(device, fp16, seed=1)
            out[f"student_{tag}_examples_per_s"] = round(examples / run.seconds, 1)
            out[f"student_{tag}_macro_f1"] = round(f1, 4)
            preds[tag] = run.preds
    if "cuda_fp16" in preds:
        again, _ = one("cuda", "on", seed=1)
        out["student_cuda_fp16_same_seed_identical_preds"] = float(np.mean(again.preds == preds["cuda_fp16"]))
        out["student_fp16_vs_fp32_pred_agreement"] = float(np.mean(preds["cuda_fp16"] == preds["cuda_fp32"]))
        out["student_fp16_speedup_vs_fp32"] = round(out["student_cuda_fp16_examples_per_s"]
                                                    / out["student_cuda_fp32_examples_per_s"], 2)
    return out


def teacher_runs(splits, model: str, n: int) -> dict:
    import torch

    from silverlabel.teachers import Prompt, get_teacher, sample_demonstrations

    train = splits.train
    demos = sample_demonstrations(train.texts, train.labels, train.label_names, k=3, seed=0)
    prompt = Prompt(task=train.task, label_names=tuple(train.label_names), demonstrations=demos)
    texts, gold = train.texts[:n], np.asarray(train.labels[:n])
    settings = [("cpu", "float32")] + ([("cuda", "float32"), ("cuda", "bfloat16")] if torch.cuda.is_available()
                                       else [])
    out: dict = {"teacher": f"hf:{model}", "teacher_items": len(texts)}
    ref = None
    for device, dtype in settings:
        teacher = get_teacher(f"hf:{model}", device=device, dtype=dtype)
        teacher.annotate(range(2), texts[:2], prompt)  # loads the weights and the prefix cache: not timed
        start = time.perf_counter()
        ann = teacher.annotate(range(len(texts)), texts, prompt)
        seconds = time.perf_counter() - start
        teacher.close()
        tag = f"{device}_{dtype}"
        probs, labels = ann.probs(), ann.label_index()
        out[f"teacher_{tag}_items_per_s"] = round(len(texts) / seconds, 1)
        out[f"teacher_{tag}_accuracy"] = round(float(np.mean(labels == gold)), 4)
        if ref is None:
            ref = (probs, labels)
        else:
            out[f"teacher_{tag}_label_agreement_vs_cpu"] = float(np.mean(labels == ref[1]))
            out[f"teacher_{tag}_max_abs_dp_vs_cpu"] = round(float(np.abs(probs - ref[0]).max()), 5)
    return out


def main() -> None:
    import torch
    import transformers

    from silverlabel.data import load_preset
    from silverlabel.splits import split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="imdb")
    ap.add_argument("--student", default="minilm", help="shipped name, hub name or model directory")
    ap.add_argument("--teacher", default="smollm2-135m", help="hf: model (shipped GGUF name, .gguf file, directory)")
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--n-teacher", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cpu-student", action="store_true", help="also train the student on the CPU (slow)")
    ap.add_argument("--skip", choices=["student", "teacher"], action="append", default=[])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    transformers.logging.set_verbosity_error()
    data = load_preset(args.dataset, offline=True)
    splits = split(data, n_train=args.n_train, n_test=args.n_test, n_validation=args.n_train // 10, seed=0)
    out: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu only",
                 "torch": torch.__version__, "transformers": transformers.__version__, "dataset": args.dataset}
    if "student" not in args.skip:
        out.update(student_runs(splits, args.student, args.epochs, args.cpu_student))
    if "teacher" not in args.skip:
        out.update(teacher_runs(splits, args.teacher, args.n_teacher))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
