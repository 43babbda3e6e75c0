"""The llama.cpp teacher on a shipped GGUF as shipped and as an F16 copy (what assets.engine_gguf_path makes for
SmolLM2-135M, whose shipped Q4_1 it runs as F16; for another model the bench writes the copy into a temporary
folder), side by side: the same items, prompt, threads and engine, in alternating rounds (shipped, F16, shipped,
...), so a noisy machine slows both alike. Reports items per second for each, their ratio (the median of the
rounds' ratios), and how far the two files' answers are apart: label agreement and the largest difference in P_S.

Why they differ in speed: llama.cpp's CPU backend multiplies Q4_1 weights row by row after quantizing the
activations to 8 bits (``ggml_vec_dot_q4_1_q8_1``), while F16 weights go through its batched GEMM kernels. The
Qwen2.5 files are Q4_K_M, which llama.cpp repacks for its GEMM kernels: ``--model qwen2.5-0.5b`` measures whether
an F16 copy would pay there too.

    python bench/teacher_engine.py [--model smollm2-135m] [--dataset toxic] [--items 48] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from silverlabel.assets import GGUF_ASSETS, dequantized_copy, engine_gguf_path, gguf_path
    from silverlabel.data import load_preset
    from silverlabel.splits import split
    from silverlabel.teachers import Prompt, get_teacher, sample_demonstrations
    from silverlabel.teachers.trie import distribution, guided_choice

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", choices=list(GGUF_ASSETS))
    ap.add_argument("--dataset", default="toxic")
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1: one test worker's share)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    s = split(load_preset(args.dataset, offline=True), n_train=max(args.items, 50), n_test=50, seed=0)
    demos = sample_demonstrations(s.train.texts, s.train.labels, s.train.label_names, k=1, seed=0)
    prompt = Prompt(task=s.train.task, label_names=tuple(s.train.label_names), demonstrations=demos)
    texts = s.train.texts[: args.items]
    shipped = gguf_path(args.model)
    own_copy = GGUF_ASSETS[args.model].engine_type != "F16"  # the product keeps no F16 copy of this model
    if own_copy:
        copy = Path(tempfile.mkdtemp()) / f"{args.model}-f16.gguf"
        dequantized_copy(shipped, copy, "F16")
    else:
        copy = engine_gguf_path(args.model)
    files = {"shipped": shipped, "F16": copy}
    teachers = {k: get_teacher(f"llamacpp:{p}", n_threads=args.threads) for k, p in files.items()}
    for t in teachers.values():
        t.prepare(prompt)
        t.score(texts[:2])  # warm-up: the first decode call allocates
    seconds: dict[str, list[float]] = {k: [] for k in files}
    probs: dict[str, np.ndarray] = {}
    labels: dict[str, list[int]] = {}

    for _ in range(args.rounds):
        for k, t in teachers.items():
            start = time.perf_counter()
            scored = t.score(texts)
            seconds[k].append(time.perf_counter() - start)
            probs[k] = np.array([distribution(sc.token_logprobs) for sc in scored])
            labels[k] = [guided_choice(t.label_tokens, sc.token_logprobs) for sc in scored]  # the teacher's label
    for t in teachers.values():
        t.close()
    ratios = [a / b for a, b in zip(seconds["shipped"], seconds["F16"])]
    if own_copy:
        copy.unlink()
    print(json.dumps({
        "model": args.model, "dataset": args.dataset, "items": len(texts), "threads": args.threads,
        "rounds": args.rounds, "shipped_items_per_s": round(len(texts) / statistics.median(seconds["shipped"]), 3),
        "f16_items_per_s": round(len(texts) / statistics.median(seconds["F16"]), 3),
        "f16_speedup": round(statistics.median(ratios), 2), "round_ratios": [round(r, 2) for r in ratios],
        "label_agreement": round(float(np.mean(np.equal(labels["shipped"], labels["F16"]))), 4),
        "max_abs_dp": round(float(np.abs(probs["shipped"] - probs["F16"]).max()), 4),
    }))


if __name__ == "__main__":
    main()
