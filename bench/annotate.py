"""Teacher annotation speed on CPU: four ways to label the same items with the same prompt, side by side.

(a) naive  - the full prompt per item, nothing reused (context reset between items), greedy generation;
(b) loop   - ``create_completion`` in a loop, greedy generation (llama-cpp-python reuses the longest common
             prompt prefix on its own): what a user writes;
(c) limit  - the shared prefix evaluated once, then each item's own tokens one item after the other, reading
             the next-token logits only (no label scoring): the sequential floor;
(d) engine - silverlabel's llama.cpp teacher: items as parallel sequences sharing the prefix's KV cells, with
             every label's tokens scored in the same batch, giving the full P_S over all labels.

It also measures llama.cpp's peak rate on this machine (the best of three evaluations of one 512-token batch)
and converts it into the ceiling for any method that must evaluate each item's own tokens and the label
continuations: ``ceiling_items_per_s`` = peak tokens/s / tokens per item. ``engine_vs_ceiling`` says how much
of that the engine reaches, and ``ceiling_vs_loop`` the most that any batching could gain over the loop here.

All four use the same chat-templated prompt, model file and thread count. Prints one JSON line; ratios are only
meaningful within one run (the machine is noisy).

    python bench/annotate.py [--model qwen2.5-0.5b] [--dataset imdb] [--items 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np


def main() -> None:
    import llama_cpp

    from silverlabel.data import load_preset
    from silverlabel.splits import split
    from silverlabel.teachers import Prompt, get_teacher, sample_demonstrations
    from silverlabel.teachers.llamacpp import avoid_amx_buffers

    avoid_amx_buffers(llama_cpp)  # the bench's own Llama, as the teacher's (it segfaults on AMX CPUs otherwise)

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--dataset", default="imdb")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--naive-items", type=int, default=None, help="items for (a), the slowest (default: all)")
    ap.add_argument("--batch-items", type=int, default=16)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    threads = os.cpu_count() or 1

    s = split(load_preset(args.dataset, offline=True), n_train=max(args.items, 50), n_test=100, seed=0)
    demos = sample_demonstrations(s.train.texts, s.train.labels, s.train.label_names, k=3, seed=0)
    prompt = Prompt(task=s.train.task, label_names=tuple(s.train.label_names), demonstrations=demos)
    texts = s.train.texts[: args.items]
    names = list(prompt.label_names)

    teacher = get_teacher(f"llamacpp:{args.model}", batch_items=args.batch_items, n_threads=threads)
    teacher.prepare(prompt)
    prefix, item_part = teacher.render(prompt)
    lead, _, suffix = item_part.partition("{text}")
    full = [prefix + lead + t + suffix for t in texts]
    max_label_tokens = max(len(t) for t in teacher.label_tokens)

    llm = llama_cpp.Llama(model_path=str(teacher.path), n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                          verbose=False, seed=0)

    def generate(p: str) -> str:
        out = llm.create_completion(p, max_tokens=max_label_tokens + 1, temperature=0.0, top_k=1)
        return out["choices"][0]["text"].strip()

    # (a) naive
    n_naive = args.naive_items or len(full)
    start = time.perf_counter()
    for p in full[:n_naive]:
        llm.reset()
        generate(p)
    naive = n_naive / (time.perf_counter() - start)

    # (b) loop
    llm.reset()
    start = time.perf_counter()
    loop_labels = [generate(p) for p in full]
    loop = len(full) / (time.perf_counter() - start)

    # (c) the sequential floor: shared prefix once, each item's tokens after it, next-token logits only
    llm.reset()
    prefix_tokens = teacher.prefix_tokens
    llm.eval(prefix_tokens)
    n_prefix = llm.n_tokens
    item_tokens = 0
    start = time.perf_counter()
    for t in texts:
        llm.n_tokens = n_prefix
        toks = llm.tokenize((lead + t).encode(), add_bos=False, special=False) + llm.tokenize(
            suffix.encode(), add_bos=False, special=True)
        item_tokens += len(toks)
        llm.eval(toks)
        llama_cpp.llama_get_logits_ith(llm.ctx, -1)[0]
    limit = len(texts) / (time.perf_counter() - start)

    # the peak: one 512-token batch (real item tokens) after the prefix, best of three
    batch = [tok for t in texts for tok in llm.tokenize((lead + t).encode(), add_bos=False, special=False)][:512]
    rates = []
    for _ in range(3):
        llm.n_tokens = n_prefix
        start = time.perf_counter()
        llm.eval(batch)
        rates.append(len(batch) / (time.perf_counter() - start))
    peak = max(rates)
    llm.close()
    # what the engine must evaluate per item: its own tokens, then every label's tokens but the last
    per_item = item_tokens / len(texts) + sum(len(t) - 1 for t in teacher.label_tokens)

    # (d) silverlabel's engine
    start = time.perf_counter()
    scored = teacher.score(texts)
    engine = len(texts) / (time.perf_counter() - start)
    from silverlabel.teachers.trie import guided_choice

    engine_labels = [names[guided_choice(teacher.label_tokens, sc.token_logprobs)] for sc in scored]
    valid = [i for i, lab in enumerate(loop_labels) if lab in names]
    agreement = float(np.mean([engine_labels[i] == loop_labels[i] for i in valid])) if valid else float("nan")
    gold = [names[i] for i in s.train.labels[: args.items]]
    teacher.close()
    print(json.dumps({
        "model": args.model, "dataset": args.dataset, "items": len(texts), "prefix_tokens": len(prefix_tokens),
        "threads": threads, "naive_items_per_s": round(naive, 3), "loop_items_per_s": round(loop, 3),
        "limit_items_per_s": round(limit, 3), "engine_items_per_s": round(engine, 3),
        "speedup_vs_naive": round(engine / naive, 2), "speedup_vs_loop": round(engine / loop, 2),
        "engine_vs_limit": round(engine / limit, 2), "agreement": round(agreement, 4),
        "peak_tokens_per_s": round(peak, 1), "tokens_per_item": round(per_item, 1),
        "ceiling_items_per_s": round(peak / per_item, 3), "engine_vs_ceiling": round(engine * per_item / peak, 2),
        "ceiling_vs_loop": round(peak / per_item / loop, 2),
        "loop_valid_labels": len(valid), "engine_accuracy": round(float(np.mean(
            [a == b for a, b in zip(engine_labels, gold)])), 4),
    }))


if __name__ == "__main__":
    main()
