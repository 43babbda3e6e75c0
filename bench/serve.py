"""Labelling through one real vLLM server, two ways, same prompt and items, side by side.

(a) guided - the paper's way: a plain guided-choice generation per item (``structured_outputs`` choice over
             the labels), the label only;
(b) engine - silverlabel's openai teacher, full P_S over every label (scoring picked by probing; on vLLM,
             ``token_ids``: the labels' tokens read through ``logprob_token_ids`` in generation requests, which
             vLLM's prefix cache serves), its label the guided-decoding one computed from those scores; once
             per ``--p-s`` kind: ``sequence`` (each label's probability with its terminator: on vLLM one walk
             down the label trie plus one more request per label off the greedy path) and ``guided`` (the
             distribution guided decoding samples from: only the trie's branching steps, one request per item
             for labels with distinct first tokens).

Both send 8 requests at a time over the same rendered chat prompt (the teacher's own rendering, so the texts
are identical), and the prefix cache is emptied before each (``/reset_prefix_cache``; the server runs with
``VLLM_SERVER_DEV_MODE=1`` for that), so neither gains from the other's work. ``agreement`` is the share of
items where the engine's label equals the guided one. The start-up of the teacher (probing the server, a few
requests) is outside the clock; so is the server's start. Prints one JSON line, with the machine's load
average before and after (other processes share the cores; ratios are only meaningful within one run). The
guided way runs before and after the engines and ``guided_items_per_s`` is the mean of the two, so a drift in
the machine's speed over the run does not favour either way. One JSON line per kind.

    python bench/serve.py [--dataset imdb] [--items 200] [--concurrency 8] [--p-s sequence,guided]
                          [--url http://127.0.0.1:8000]

``--api chat`` runs the hosted-API teacher instead (``chat:``, the ``openai`` SDK on ``/v1/chat/completions``),
once per ``--methods`` P_S method, against the paper's guided decoding sent the same way (a chat completion
with vLLM's choice constraint, the prompt as one user message, as the teacher sends it with
``messages="single"``); besides speed and agreement it reports requests per item and the mean |dP| of each
method's P_S to the exact one (the openai teacher's, run before the clock starts: its sequence P_S, and its
``guided`` P_S, the distribution guided decoding samples from, which the estimating methods target).

    python bench/serve.py --api chat [--methods token_ids,token_ids@guided,top_logprobs,sample,verbalized,label]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> None:
    import httpx

    from silverlabel.data import load_preset
    from silverlabel.splits import split
    from silverlabel.teachers import Prompt, get_teacher, sample_demonstrations
    from silverlabel.teachers.openai_wire import guided_value, most_tokens

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="imdb")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--url", default=None, help="a running vLLM (started with VLLM_SERVER_DEV_MODE=1); default: "
                                                "start one from .venv-vllm (scripts/setup_vllm.sh)")
    ap.add_argument("--model", default="smol", help="the served model name")
    ap.add_argument("--p-s", default="sequence,guided", help="the engine's P_S kinds to run, comma-separated")
    ap.add_argument("--server", choices=("vllm", "llama-server"), default="vllm",
                    help="which server the bench starts when --url is not given (llama-server: "
                         "scripts/setup_llama_server.sh; one slot, as the tests run it)")
    ap.add_argument("--api", choices=("completions", "chat"), default="completions",
                    help="completions: the openai teacher (default); chat: the chat teacher, per --methods")
    ap.add_argument("--methods", default="token_ids@guided,top_logprobs",
                    help="--api chat: P_S methods, comma-separated; METHOD@guided runs it with p_s = \"guided\"")
    ap.add_argument("--block-size", type=int, default=None,
                    help="vLLM's KV block size when the bench starts the server (default: tests/vllm_server.py's "
                         "BLOCK_SIZE, 32; vLLM's own CPU default is 128)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    s = split(load_preset(args.dataset, offline=True), n_train=max(args.items, 50), n_test=50, seed=0)
    demos = sample_demonstrations(s.train.texts, s.train.labels, s.train.label_names, k=3, seed=0)
    prompt = Prompt(task=s.train.task, label_names=tuple(s.train.label_names), demonstrations=demos)
    texts, items = s.train.texts[: args.items], s.train.items[: args.items]
    names = list(prompt.label_names)

    extra = ("--block-size", str(args.block_size)) if args.block_size else ()
    kinds = args.p_s.split(",")
    if args.api == "chat":
        with _server(args.url, extra, args.server) as url:
            _chat(args, url, prompt, items, texts)
        return
    with _server(args.url, extra, args.server) as url:
        http = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=args.concurrency + 2))
        teachers = {k: get_teacher(f"openai:{url}/v1#{args.model}", concurrency=args.concurrency, p_s=k)
                    for k in kinds}
        for teacher in teachers.values():
            teacher.prepare(prompt)
        first = next(iter(teachers.values()))
        # the engine's own cuts of over-long texts, so both ways see the same prompts
        contexts = [first._context(first._fit(t)[0]) for t in texts]
        most = most_tokens(names)  # the teacher's own bound on a constrained answer
        # the guided field the teacher's probe found (vLLM: structured_outputs; llama-server: a GBNF grammar)
        field = first._probe_guided(contexts[0]) or "structured_outputs"
        guided_body = {field: guided_value(field, names)}

        def guided(context: str) -> str:
            r = http.post(f"{url}/v1/completions", json={
                "model": args.model, "prompt": context, "temperature": 0, "max_tokens": most,
                "add_special_tokens": False, **guided_body})
            r.raise_for_status()
            return r.json()["choices"][0]["text"].strip()

        def run_guided() -> tuple[list[str], float]:
            return _timed(http, url, guided, contexts, args.concurrency)

        load_before = _loadavg()
        guided_labels, guided_s = run_guided()
        engines = {}
        for kind, teacher in teachers.items():
            _reset(http, url)
            t0 = time.perf_counter()
            # one score() batch per 4 rounds of concurrent requests: a batch waits for its slowest item
            ann = teacher.annotate(items, texts, prompt, batch_size=args.concurrency * 4)
            engines[kind] = (ann, time.perf_counter() - t0)
            teacher.close()
        again, guided_s2 = run_guided()
        load_after = _loadavg()

    n = len(texts)
    guided_mean = (guided_s + guided_s2) / 2
    for kind, (ann, engine_s) in engines.items():
        engine_labels = ann.frame["label"].tolist()
        agreement = sum(a == b for a, b in zip(engine_labels, guided_labels)) / n
        result = {
            "bench": "serve", "server": args.server if not args.url else "given", "guided_field": field,
            "dataset": args.dataset, "items": n, "concurrency": args.concurrency, "p_s": kind, "scoring": teachers[kind].mode,
            "block_size": (int(extra[1]) if extra else (None if args.url else 32)) if args.server == "vllm" else None,
            "label_tokens": first.label_tokens, "guided_items_per_s": round(n / guided_mean, 3),
            "guided_items_per_s_runs": [round(n / guided_s, 3), round(n / guided_s2, 3)],
            "engine_items_per_s": round(n / engine_s, 3), "engine_vs_guided": round(guided_mean / engine_s, 3),
            "agreement": round(agreement, 4), "guided_runs_agree": again == guided_labels,
            "engine_failed": ann.summary.failed, "engine_truncated": ann.summary.truncated,
            "guided_off_label": sum(g not in names for g in guided_labels),
            "loadavg_before": load_before, "loadavg_after": load_after,
        }
        sys.stdout.write(json.dumps(result) + "\n")


def _chat(args, url: str, prompt, items, texts) -> None:
    """--api chat: the chat teacher per P_S method against guided decoding through the same endpoint."""
    import httpx
    import numpy as np

    from silverlabel.teachers import get_teacher

    names = list(prompt.label_names)
    http = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=args.concurrency + 2))
    exact = {}
    for kind in ("sequence", "guided"):  # the references, outside the clock
        t = get_teacher(f"openai:{url}/v1#{args.model}", concurrency=args.concurrency, p_s=kind)
        exact[kind] = t.annotate(items, texts, prompt, batch_size=args.concurrency * 4)
        t.close()

    def guided(text: str) -> str:
        r = http.post(f"{url}/v1/chat/completions", json={
            "model": args.model, "messages": prompt.messages(text, "single"), "temperature": 0,
            "max_completion_tokens": max(len(n.encode()) for n in names) + 16,
            "structured_outputs": {"choice": names}})
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"].strip()

    def run_guided() -> tuple[list[str], float]:
        return _timed(http, url, guided, texts, args.concurrency)

    load_before = _loadavg()
    guided_labels, guided_s = run_guided()
    runs = {}
    for spec in args.methods.split(","):
        method, _, kind = spec.partition("@")  # token_ids@guided: token_ids with p_s = "guided"
        teacher = get_teacher(f"chat:{url}/v1#{args.model}", p_s_method=method, messages="single",
                              concurrency=1 if method == "sample" else args.concurrency, p_s=kind or "sequence")
        teacher.prepare(prompt)  # probing is outside the clock, as the openai teacher's is
        _reset(http, url)
        t0 = time.perf_counter()
        ann = teacher.annotate(items, texts, prompt, batch_size=args.concurrency * 4)
        runs[spec] = (ann, time.perf_counter() - t0, teacher.answer.kind)
        teacher.close()
    again, guided_s2 = run_guided()
    load_after = _loadavg()
    n = len(texts)
    guided_mean = (guided_s + guided_s2) / 2
    for method, (ann, engine_s, constraint) in runs.items():
        p = ann.probs()
        ok = ~np.isnan(p).any(axis=1)
        dp = {k: round(float(np.abs(p[ok] - a.probs()[ok]).mean()), 5) for k, a in exact.items()}
        labels = ann.frame["label"].tolist()
        result = {
            "bench": "serve", "api": "chat", "server": args.server if not args.url else "given",
            "dataset": args.dataset, "items": n, "concurrency": args.concurrency, "p_s_method": method,
            "constraint": constraint, "guided_items_per_s": round(n / guided_mean, 3),
            "guided_items_per_s_runs": [round(n / guided_s, 3), round(n / guided_s2, 3)],
            "engine_items_per_s": round(n / engine_s, 3), "engine_vs_guided": round(guided_mean / engine_s, 3),
            "requests_per_item": round(ann.summary.requests / n, 3),
            "mean_abs_dp_to_exact_sequence": dp["sequence"], "mean_abs_dp_to_exact_guided": dp["guided"],
            "min_observed_mass": ann.summary.min_observed,
            "agreement": round(sum(a == b for a, b in zip(labels, guided_labels)) / n, 4),
            "guided_runs_agree": again == guided_labels, "engine_failed": ann.summary.failed,
            "loadavg_before": load_before, "loadavg_after": load_after,
        }
        sys.stdout.write(json.dumps(result) + "\n")


def _timed(http, url: str, guided, inputs, concurrency: int) -> tuple[list[str], float]:
    """Guided decoding over ``inputs``, ``concurrency`` at a time, from an empty prefix cache: labels, seconds."""
    _reset(http, url)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        labels = list(pool.map(guided, inputs))
    return labels, time.perf_counter() - t0


def _reset(http, url: str) -> None:
    r = http.post(f"{url}/reset_prefix_cache")
    if r.status_code == 404 and http.get(f"{url}/health").status_code == 200:
        return  # llama-server: no such endpoint; its one slot keeps the last prompt, for both ways alike
    if r.status_code != 200:
        raise SystemExit(f"{url}/reset_prefix_cache: HTTP {r.status_code}; start vLLM with VLLM_SERVER_DEV_MODE=1")


class _server:
    """The given URL, or a vLLM started here for the bench (dev mode, for /reset_prefix_cache)."""

    def __init__(self, url: str | None, extra: tuple[str, ...] = (), kind: str = "vllm"):
        self.url, self.extra, self.kind, self._ctx = url, extra, kind, None

    def __enter__(self) -> str:
        if self.url:
            return self.url.rstrip("/").removesuffix("/v1")
        import os

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.vllm_server import vllm_python, vllm_server

        if self.kind == "llama-server":
            from tests.llama_cpp_server import BINARY, llama_cpp_server

            if not BINARY.exists():
                raise SystemExit("llama-server is not built: bash scripts/setup_llama_server.sh")
            self._tmp = tempfile.TemporaryDirectory()
            self._ctx = llama_cpp_server(Path(self._tmp.name))
            return self._ctx.__enter__()
        if vllm_python() is None:
            raise SystemExit("vLLM is not installed: bash scripts/setup_vllm.sh")
        os.environ["VLLM_SERVER_DEV_MODE"] = "1"
        self._tmp = tempfile.TemporaryDirectory()
        self._ctx = vllm_server(Path(self._tmp.name), extra=self.extra)
        return self._ctx.__enter__()

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
            self._tmp.cleanup()


if __name__ == "__main__":
    main()
