"""Do conclusions survive another prompt or another teacher? The multiverse of the shipped data, measured.

For each dataset (the real toxic tweets and the imdb stand-in) the study config in ``bench/multiverse/`` declares
the shipped teachers (SmolLM2-135M and Qwen2.5-0.5B on llama.cpp; the 1.5B too with ``--with-1.5b`` where it is
installed), three instruction variants and two demonstration sets each: 12 configurations that label the same
items into one annotation store (``bench/out/multiverse/annotations.sqlite``, so a rerun labels nothing). Its
``[[hypotheses]]`` (a prevalence against a threshold, differences between groups of a covariate the text gives,
OLS and logistic coefficient signs) are then decided for every configuration by the teacher's labels taken as
truth and by PPI++ with a uniform gold sample of 200, drawn ``--draws`` times; the reference decision is the
classical test on all the items' gold labels (:mod:`silverlabel.multiverse`, the code `study run` runs).

Per method the share of (configuration, draw) decisions with a Type I, II or S error, against nominal
``1 - level`` for Type I (with its binomial noise over the decisions that could make one), and how long the
labelling took on this machine.

    python bench/multiverse.py [--draws 200] [--datasets toxic,imdb] [--with-1.5b]
One JSON line per dataset.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

# run as a script, this file's folder is first on sys.path and bench/coverage.py would shadow the `coverage`
# package that numba (under ppi_py) imports; drop the folder
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from silverlabel.config import StudyConfig, load_study_config  # noqa: E402
from silverlabel.multiverse import study_multiverse  # noqa: E402
from silverlabel.study import prepare_all  # noqa: E402
from silverlabel.study.labels import annotate_all  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "multiverse"


def label(config, out: Path):
    """Every configuration's records {(dataset, teacher configuration): {demo seed: frame}} and its labelling
    seconds, by the study's own labelling step (so `study run` on the same config and folder reuses the store)."""
    prepared = prepare_all(config, offline=None)
    records, summaries, _ = annotate_all(config, prepared, out)
    seconds = {f"{s['teacher']}/d{s['demo_seed']}": round(s["seconds"], 1) for s in summaries}
    return prepared, records, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--datasets", default="toxic,imdb")
    ap.add_argument("--with-1.5b", dest="big", action="store_true")
    ap.add_argument("--label-only", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.datasets.split(","):
        config = load_study_config(HERE / "multiverse" / f"{name}.toml")
        if args.big:  # the 1.5B with the same instructions and demonstration sets (its GGUF must be installed)
            data = config.to_dict()
            data["teachers"].append({**data["teachers"][-1], "name": "qwen1.5b", "uri": "llamacpp:qwen2.5-1.5b"})
            config = StudyConfig.from_dict(data)
        t0 = time.perf_counter()
        prepared, records, seconds = label(config, OUT)
        line = {"dataset": name, "configurations": len(seconds), "label_s": round(time.perf_counter() - t0, 1),
                "label_s_per_configuration": seconds}
        if not args.label_only:
            t1 = time.perf_counter()
            result = study_multiverse(config, prepared, records, draws=args.draws)
            line.update(items=result[0]["configurations"][0]["n_items"], draws=args.draws, gold_size=result[0]["gold_size"],
                        level=result[0]["level"], evaluate_s=round(time.perf_counter() - t1, 1),
                        error_rates=pooled(result), hypotheses=[summary(h) for h in result])
        print(json.dumps(line), flush=True)


def summary(h: dict) -> dict:
    """One hypothesis: the reference, each method's error shares, and the range of teacher-as-truth estimates."""
    return {"name": h["name"], "reference": h["reference"]["decision"],
            "reference_estimate": round(h["reference"]["estimate"], 4),
            **{m: {**{k: round(h["errors"][m][k], 4) for k in ("type_I", "type_II", "type_S")},
                   "no_estimate": h["errors"][m]["no_estimate"]} for m in h["errors"]},
            "teacher_range": [None if v is None else round(v, 4) for v in (h["range"]["teacher"]["low"],
                                                                           h["range"]["teacher"]["high"])],
            "teacher_decisions": h["range"]["teacher"]["decisions"]}


def pooled(result: list[dict]) -> dict:
    """Per method over every hypothesis, configuration and draw: Type I as the share of the decisions whose
    reference is "not significant" (the only ones that can make one), Type II and S as shares of the others, and
    the bound nominal + 2 binomial sd for Type I. The configurations of one draw share its gold labels, so their
    PPI++ decisions are not independent: the sd counts only the draws of the null hypotheses (conservative)."""
    out = {}
    for method in result[0]["errors"]:
        counts = {k: sum(h["errors"][method][f"n_{k}"] for h in result) for k in ("type_I", "type_II", "type_S")}
        n = sum(h["errors"][method]["decisions"] for h in result)
        null = sum(h["errors"][method]["decisions"] for h in result if h["reference"]["decision"] == "0")
        null_draws = sum(h["draws"] for h in result if h["reference"]["decision"] == "0")
        alpha = 1 - result[0]["level"]
        out[method] = {"decisions": n, "type_I": counts["type_I"] / max(null, 1), "type_I_of": null,
                       "type_II": counts["type_II"] / max(n - null, 1), "type_S": counts["type_S"] / max(n - null, 1),
                       "any_error": sum(counts.values()) / max(n, 1),
                       "no_estimate": sum(h["errors"][method]["no_estimate"] for h in result),
                       "type_I_bound": alpha + 2 * math.sqrt(alpha * (1 - alpha) / max(null_draws, 1))}
    return out


if __name__ == "__main__":
    main()
