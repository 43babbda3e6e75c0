"""Runs the in-process ``vllm:`` teacher inside vLLM's own venv (``.venv-vllm``, with ``PYTHONPATH=src``) on the
contract test's items and writes what the test compares: the annotation frame (Parquet), its summary, the raw
scores and the label tokens (JSON). The test suite's interpreter has no vLLM, so tests call this as a subprocess
(``tests/vllm_server.py: run_engine_worker``).

    .venv-vllm/bin/python tests/vllm_engine_worker.py MODEL_DIR OUT_DIR [--items N] [--guided engine|local]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: make `tests` importable
from tests.spy import record_scores  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--guided", default="engine")
    args = parser.parse_args()

    import torch

    from silverlabel.data import load_preset
    from silverlabel.splits import split
    from silverlabel.teachers import Prompt, get_teacher, sample_demonstrations

    threads_before = torch.get_num_threads()
    # the contract test's toxic fixture (tests/integration/conftest.py), item for item
    s = split(load_preset("toxic", offline=True), n_train=200, n_test=50, seed=0)
    demos = sample_demonstrations(s.train.texts, s.train.labels, s.train.label_names, k=3, seed=0)
    prompt = Prompt(task=s.train.task, label_names=tuple(s.train.label_names), demonstrations=demos)
    t0 = time.monotonic()
    teacher = get_teacher(f"vllm:{args.model_dir}", guided=args.guided, enforce_eager=True,
                          max_model_len=2048, engine={"block_size": 32, "max_logprobs": 20})
    scored = record_scores(teacher)
    ann = teacher.annotate(s.train.items[:args.items], s.train.texts[:args.items], prompt,
                           gold=s.train.labels[:args.items])
    seconds = time.monotonic() - t0
    # a second teacher on the same model (as a study makes one per table) reuses the loaded engine
    engine = teacher._llm
    teacher.close()
    again = get_teacher(f"vllm:{args.model_dir}", guided=args.guided, enforce_eager=True,
                        max_model_len=2048, engine={"block_size": 32, "max_logprobs": 20})
    reloaded = again.annotate(s.train.items[:2], s.train.texts[:2], prompt)
    reused = again._llm is engine and reloaded.frame["label"].tolist() == ann.frame["label"][:2].tolist()
    again.close()
    # p_s="guided" on the same engine: only the branching steps are read
    guided = get_teacher(f"vllm:{args.model_dir}", guided=args.guided, enforce_eager=True, p_s="guided",
                         max_model_len=2048, engine={"block_size": 32, "max_logprobs": 20})
    guided_ann = guided.annotate(s.train.items[:4], s.train.texts[:4], prompt)
    guided.close()
    # another engine configuration shuts the held engine down first: one engine per process
    from silverlabel.teachers import vllm_engine

    other = get_teacher(f"vllm:{args.model_dir}", guided=args.guided, enforce_eager=True,
                        max_model_len=1024, engine={"block_size": 32, "max_logprobs": 20})
    relabelled = other.annotate(s.train.items[:2], s.train.texts[:2], prompt)
    replaced = (other._llm is not engine and list(vllm_engine._ENGINES.values()) == [other._llm]
                and relabelled.frame["label"].tolist() == ann.frame["label"][:2].tolist())
    other.close()
    vllm_engine.release_engines()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ann.frame.to_parquet(out / "frame.parquet", index=False)
    (out / "result.json").write_text(json.dumps({
        "model_id": teacher.model_id, "label_names": ann.label_names,
        "summary": dataclasses.asdict(ann.summary), "label_tokens": [list(t) for t in teacher.label_tokens],
        "scored": [dataclasses.asdict(x) for x in scored], "engine_choices": teacher.engine_choices,
        "prefix_tokens": len(teacher.prefix_tokens), "seconds": seconds,
        "torch_threads": [threads_before, torch.get_num_threads()], "engine_reused": reused,
        "engine_replaced": replaced, "guided_probs": guided_ann.probs().tolist(),
        "guided_labels": guided_ann.frame["label"].tolist()}))


if __name__ == "__main__":
    main()
