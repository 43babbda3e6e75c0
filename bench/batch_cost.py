"""What a batched annotation costs beside the synchronous one, on the same items and the same real model.

The ``chat:`` teacher labels ``--items`` toxic tweets twice through ``tests/batch_server.py`` in front of a real
vLLM server (SmolLM2-135M): synchronously, then with ``batch=true`` (OpenAI's Batch API as the test server
speaks it). Both at the same prices (``--price-input``, ``--price-output`` per million tokens; gpt-4o-mini's by
default), so the two costs differ only by the batch discount, on the token counts the server reported. Also the
agreement of the labels and the largest |dP| between the two runs, and how many requests the server answered.
Prints one JSON line.

    python bench/batch_cost.py [--items 200] [--url http://127.0.0.1:8000]   # default: starts vLLM itself
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from silverlabel.cache import AnnotationStore  # noqa: E402
from silverlabel.data import load_preset  # noqa: E402
from silverlabel.splits import split  # noqa: E402
from silverlabel.teachers import Prompt, get_teacher, sample_demonstrations  # noqa: E402
from tests.batch_server import batch_server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--url", default=None, help="a running vLLM server serving SmolLM2-135M as 'smol'")
    ap.add_argument("--price-input", type=float, default=0.15)
    ap.add_argument("--price-output", type=float, default=0.60)
    ap.add_argument("--method", default="top_logprobs")
    args = ap.parse_args()
    s = split(load_preset("toxic", offline=True), n_train=args.items, n_test=50, seed=0)
    demos = sample_demonstrations(s.train.texts, s.train.labels, s.train.label_names, k=3, seed=0)
    prompt = Prompt(task=s.train.task, label_names=tuple(s.train.label_names), demonstrations=demos)
    ids, texts = s.train.items[:args.items], s.train.texts[:args.items]
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = args.url
        if url is None:
            from tests.vllm_server import vllm_server

            url = stack.enter_context(vllm_server(tmp / "vllm"))
        server_url, server = stack.enter_context(batch_server(url, rules="openai"))
        options = {"p_s_method": args.method, "concurrency": 1, "price_input": args.price_input,
                   "price_output": args.price_output, "batch_poll_max": 1.0}
        runs = {}
        for name, extra in (("synchronous", {}), ("batch", {"batch": True})):
            teacher = get_teacher(f"chat:{server_url}/v1#smol", **options, **extra)
            t0 = time.perf_counter()
            with AnnotationStore(tmp / f"{name}.sqlite") as store:
                runs[name] = teacher.annotate(ids, texts, prompt, store=store)
            runs[name].seconds = time.perf_counter() - t0
            teacher.close()
    a, b = runs["synchronous"], runs["batch"]
    p = [c for c in a.frame.columns if c.startswith("p:")]
    print(json.dumps({
        "bench": "batch_cost", "items": args.items, "method": args.method,
        "prices_per_million": [args.price_input, args.price_output],
        "synchronous_cost": round(a.summary.cost, 6), "batch_cost": round(b.summary.cost, 6),
        "ratio": round(b.summary.cost / a.summary.cost, 4),
        "prompt_tokens": [a.summary.prompt_tokens, b.summary.prompt_tokens],
        "completion_tokens": [a.summary.completion_tokens, b.summary.completion_tokens],
        "failed": [a.summary.failed, b.summary.failed], "batches": len(server.submitted),
        "lines_answered": sum(server.executed.values()), "duplicates": sum(n - 1 for n in server.executed.values()),
        "label_agreement": float((a.frame["label"] == b.frame["label"]).mean()),
        "max_abs_dp": float(np.nanmax(np.abs(a.frame[p].to_numpy(float) - b.frame[p].to_numpy(float)))),
        "seconds": [round(a.seconds, 1), round(b.seconds, 1)]}))


if __name__ == "__main__":
    main()
