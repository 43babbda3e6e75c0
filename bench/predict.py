"""Applying a saved student to a corpus: ``silverlabel predict`` against ``transformers.pipeline``, side by side.

One saved MiniLM student (trained here on 200 gold-labelled toxic tweets, 1 epoch, unless ``--model`` names a
folder) labels the same 20,000 shipped tweets twice: (a) the plain ``transformers.pipeline("text-classification",
batch_size=32)`` a user writes from the docs (it pads each batch of 32 in input order), (b) ``silverlabel predict``
(streamed in chunks, each chunk's texts sorted by length and padded only to each batch's longest). Each runs in its
own process, one after the other, and reports its wall time (model load included) and its peak RSS. Then (b) runs
again on 200,000 texts (the 20,000 repeated ten times) to show its memory stays flat however long the file is.

    python bench/predict.py [--texts 20000] [--repeat 10] [--model DIR] [--batch-size 32]

One JSON line: texts_per_s of each, speedup (b over a), agreement (share of equal labels), peak_rss_mb of (b) at
20k and at 200k texts, and their difference. Targets: speedup >= 2.0 on a 2-core CPU, agreement 1.0, the 200k run
within 150 MB of the 20k run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM: getrusage's ru_maxrss keeps the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_pipeline(model: str, data: str, out: str, batch_size: int, max_length: int) -> dict:
    import pandas as pd
    from transformers import pipeline

    started = time.perf_counter()
    texts = pd.read_csv(data)["text"].tolist()
    clf = pipeline("text-classification", model=model, device="cpu")
    labels = [r["label"] for r in clf(texts, batch_size=batch_size, truncation=True, max_length=max_length)]
    seconds = time.perf_counter() - started
    pd.DataFrame({"label": labels}).to_csv(out, index=False)
    return {"texts": len(texts), "seconds": seconds, "peak_rss_mb": _peak_mb()}


def worker_silverlabel(model: str, data: str, out: str, batch_size: int) -> dict:
    from silverlabel.corpus import predict

    started = time.perf_counter()
    summary = predict([model], data, out, batch_size=batch_size, overwrite=True)
    return {"texts": summary.texts, "seconds": time.perf_counter() - started, "peak_rss_mb": _peak_mb()}


def _run(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", *args], check=True, capture_output=True, text=True,
                          env={**__import__("os").environ, "SILVERLABEL_QUIET": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def _train(folder: Path) -> Path:
    from silverlabel.config import DatasetSpec, StudentSpec, StudyConfig
    from silverlabel.study import run_study

    config = StudyConfig(name="bench-predict", label_sources=["gold"], seeds=[1], bootstrap=0,
                         datasets=[DatasetSpec(source="toxic", n_train=200, n_test=50, n_validation=20)],
                         students=[StudentSpec(name="minilm", model="minilm", epochs=1, max_length=128,
                                               save_model=True)])
    run_study(config, folder, report=False)
    return next((folder / "models").iterdir())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--worker", nargs="*", default=None)
    args = ap.parse_args()
    if args.worker is not None:
        kind, model, data, out, batch = args.worker[:5]
        result = (worker_pipeline(model, data, out, int(batch), int(args.worker[5])) if kind == "pipeline"
                  else worker_silverlabel(model, data, out, int(batch)))
        print(json.dumps(result))
        return

    import pandas as pd

    from silverlabel.data import load_preset
    from silverlabel.students.saved import read_saved

    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    model = Path(args.model) if args.model else _train(tmp / "study")
    max_length = read_saved(model).max_length or 128
    texts = list(load_preset("toxic", offline=True).texts[: args.texts])
    small, large = tmp / "small.csv", tmp / "large.csv"
    pd.DataFrame({"text": texts}).to_csv(small, index=False)
    pd.DataFrame({"text": texts * args.repeat}).to_csv(large, index=False)
    b = str(args.batch_size)
    base = _run("pipeline", str(model), str(small), str(tmp / "a.csv"), b, str(max_length))
    ours = _run("silverlabel", str(model), str(small), str(tmp / "b.csv"), b)
    big = _run("silverlabel", str(model), str(large), str(tmp / "c.csv"), b)
    a = pd.read_csv(tmp / "a.csv")["label"]
    got = pd.read_csv(tmp / "b.csv")["label"]
    print(json.dumps({
        "bench": "predict", "model": str(model), "texts": len(texts), "batch_size": args.batch_size,
        "pipeline_texts_per_s": round(base["texts"] / base["seconds"], 1),
        "silverlabel_texts_per_s": round(ours["texts"] / ours["seconds"], 1),
        "speedup": round(base["seconds"] / ours["seconds"], 3),
        "agreement": float((a.to_numpy() == got.to_numpy()).mean()),
        "peak_rss_mb": {f"pipeline_{len(texts) // 1000}k": round(base["peak_rss_mb"], 1),
                        f"silverlabel_{len(texts) // 1000}k": round(ours["peak_rss_mb"], 1),
                        f"silverlabel_{len(texts) * args.repeat // 1000}k": round(big["peak_rss_mb"], 1)},
        "rss_growth_mb": round(big["peak_rss_mb"] - ours["peak_rss_mb"], 1),
        "large_texts_per_s": round(big["texts"] / big["seconds"], 1),
        "loadavg": [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]],
    }))


if __name__ == "__main__":
    main()
