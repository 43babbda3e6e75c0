"""llama-cpp-python in process: the offline teacher.

The prompt's instruction, labels and demonstrations are the same for every item, so they are evaluated once
(sequence 0) and their KV cells are shared by every item. A batch of items is then decoded together as parallel
sequences: each item's tokens are tagged with one sequence per label, and each label's tokens ride in the same
``llama_decode`` call in their own sequence, so one call yields every logit needed for the full label
distribution. This uses llama.cpp's low-level batch API, which the high-level ``Llama`` class does not expose.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import Field

from ..devices import usable_cpus
from ..errors import SilverlabelError
from .base import Scored, Teacher, TeacherOptions, register_teacher
from .prompts import Prompt
from .token_prompt import TokenPrompt, render

log = logging.getLogger(__name__)


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise SilverlabelError(
            "the llamacpp teacher needs llama-cpp-python: pip install 'silverlabel[llamacpp]' "
            "(it compiles from source, about 5 minutes)") from None
    avoid_amx_buffers(llama_cpp)
    return llama_cpp


def avoid_amx_buffers(llama_cpp) -> bool:
    """On a CPU with AMX (Intel Sapphire Rapids and later), a llama.cpp built for it moves Q4 weights into AMX
    buffers, and the first decode then segfaults (ggml-org/llama.cpp#20824; seen here on 2026-12-03 with
    llama-cpp-python 0.3.36 and the shipped Qwen2.5 Q4_K_M). llama.cpp's ``use_extra_bufts=False`` avoids those
    buffers, but ``llama_cpp.Llama`` exposes no such argument, so, only where the build reports ``AMX_INT8 = 1``,
    the model parameters every ``Llama`` starts from get it (a process-wide patch written by hand: no library does
    this). The CPU's weight repacking goes with it, so such a machine's P_S differs from an AVX2 one's in the last
    digits, as it would anyway; results.json's ``machine`` records the system info. Returns whether it applied."""
    from llama_cpp import llama_cpp as lib

    if getattr(lib.llama_model_default_params, "_silverlabel_no_amx", False):
        return True
    if "AMX_INT8 = 1" not in lib.llama_print_system_info().decode(errors="replace"):
        return False
    default = lib.llama_model_default_params

    def without_extra_buffers():
        params = default()
        params.use_extra_bufts = False
        return params

    without_extra_buffers._silverlabel_no_amx = True
    lib.llama_model_default_params = without_extra_buffers
    return True


def resolve_gguf(name: str) -> tuple[Path, str]:
    """A shipped model's short name or a .gguf path; returns the file llama.cpp runs and an id for cache keys
    (a shipped model run as a dequantized copy, ``assets.engine_gguf_path``, names the copy's type)."""
    from ..assets import GGUF_ASSETS, engine_gguf_path, sha256_file

    if name in GGUF_ASSETS:
        asset = GGUF_ASSETS[name]
        engine = f"/{asset.engine_type}" if asset.engine_type else ""
        return engine_gguf_path(name), asset.cache_id + engine
    path = Path(name).expanduser()
    if not path.exists():
        raise SilverlabelError(
            f"teacher model '{name}' not found: give a .gguf file or one of {', '.join(GGUF_ASSETS)}")
    if path.is_dir() or path.suffix.lower() != ".gguf":
        raise SilverlabelError(f"teacher model '{name}' is not a .gguf file")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise SilverlabelError(f"{path}: not a GGUF file (bad magic bytes); is it a complete download?")
    return path, f"{path.name}@{sha256_file(path)[:12]}"


def softmax_log(logits: np.ndarray) -> np.ndarray:
    m = logits.max()
    return logits - m - np.log(np.exp(logits - m).sum())


class _LlamaVocab:
    """llama.cpp's vocabulary as the token-level prompt's :class:`~.token_prompt.Vocabulary`."""

    def __init__(self, llm, name: str):
        self.llm, self.name = llm, name

    def tokens(self, text: str, *, special: bool, bos: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=special)

    def prefix_tokens(self, prefix: str) -> list[int]:
        bos = self.llm.token_bos()
        bos_text = self.llm._model.token_get_text(bos) if bos >= 0 else None
        return self.tokens(prefix, special=True, bos=not (bos_text and prefix.startswith(bos_text)))

    def is_special(self, token: int) -> bool:
        return bool(self.llm._model.token_get_attr(token) & 24)  # LLAMA_TOKEN_ATTR_CONTROL | USER_DEFINED

    def decode(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode("utf-8", errors="replace")

    def apply_chat(self, messages: list[dict], generation: bool) -> str:
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise SilverlabelError(f"{self.name} carries no chat template; use the raw prompt (--raw-prompt)")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        vocab, llm = self.llm._model, self.llm
        specials = {"bos_token": vocab.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else "",
                    "eos_token": vocab.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else ""}
        return env.from_string(template).render(messages=messages, add_generation_prompt=generation, **specials)

    def eos(self) -> int:
        return self.llm.token_eos()


class LlamaCppOptions(TeacherOptions):
    """``[teachers.options]`` of a ``llamacpp:`` teacher."""

    n_ctx: int = Field(8192, ge=64)
    n_threads: int | None = Field(None, ge=1)
    n_gpu_layers: int = Field(0, ge=-1)  # -1: every layer
    batch_items: int = Field(16, ge=1)
    n_batch: int = Field(2048, ge=1)


@register_teacher(options=LlamaCppOptions)
class LlamaCppTeacher(Teacher):
    """``llamacpp:PATH_OR_NAME`` — a GGUF model run in this process (CPU, or GPU when llama.cpp was built so)."""

    backend = "llamacpp"

    def __init__(self, model: str, *, chat: bool = True, n_ctx: int = 8192, n_threads: int | None = None,
                 batch_items: int = 16, n_batch: int = 2048, n_gpu_layers: int = 0, p_s: str = "sequence"):
        super().__init__(model, chat=chat, p_s=p_s)
        self.path, self._id = resolve_gguf(model)
        self.n_ctx = n_ctx
        self.batch_items = batch_items
        self.n_batch = n_batch
        self.n_threads = n_threads or usable_cpus()
        self.n_gpu_layers = n_gpu_layers
        self._llm = None
        self._prefix_len = 0
        self.token_prompt: TokenPrompt | None = None

    @property
    def model_id(self) -> str:
        return self._id

    # ------------------------------------------------------------------ model and prompt
    def _load(self):
        """Load the model, and a decoding context of our own: ``Llama`` only turns on the unified KV cache and
        many parallel sequences for embeddings, and the shared-prefix batch needs both."""
        if self._llm is None:
            llama_cpp = _import_llama_cpp()
            from llama_cpp import _internals

            try:
                self._llm = llama_cpp.Llama(
                    model_path=str(self.path), n_ctx=64, n_batch=64, n_threads=self.n_threads,
                    n_gpu_layers=self.n_gpu_layers, verbose=False, seed=0)
            except (ValueError, RuntimeError) as exc:
                raise SilverlabelError(f"{self.path}: llama.cpp could not load it ({exc}); the file may be "
                                       "truncated or not a model llama.cpp supports") from None
            params = llama_cpp.llama_context_default_params()
            params.n_ctx = self.n_ctx
            params.n_batch = self.n_batch
            params.n_ubatch = self.n_batch
            params.n_seq_max = llama_cpp.llama_max_parallel_sequences()
            params.kv_unified = True
            params.n_threads = self.n_threads
            params.n_threads_batch = self.n_threads
            params.no_perf = True
            self._context = _internals.LlamaContext(model=self._llm._model, params=params, verbose=False)
            self._ctx = self._context.ctx
            self.max_seqs = int(params.n_seq_max)
        return self._llm

    def _vocab(self) -> _LlamaVocab:
        return _LlamaVocab(self._load(), self.path.name)

    def render(self, prompt: Prompt) -> tuple[str, str]:
        """The prompt as the model sees it (inside its chat template unless raw), split at the item's text."""
        return render(self._vocab(), prompt, chat=self.chat)

    def prepare(self, prompt: Prompt) -> None:
        llama_cpp = _import_llama_cpp()
        self.token_prompt = TokenPrompt.build(self._vocab(), prompt, chat=self.chat)
        self.terminator = self.token_prompt.terminator
        self.label_tokens = self.token_prompt.label_tokens
        self.prefix_tokens = self.token_prompt.prefix_tokens
        mem = llama_cpp.llama_get_memory(self._ctx)
        llama_cpp.llama_memory_clear(mem, True)
        self._decode([(tok, pos, (0,), False) for pos, tok in enumerate(self.prefix_tokens)])
        self._prefix_len = len(self.prefix_tokens)
        self.prompt = prompt

    # ------------------------------------------------------------------ decoding
    def _decode(self, entries: list[tuple[int, int, tuple[int, ...], bool]]) -> list[int]:
        """Decode (token, position, seq ids, want logits) entries in n_batch-sized calls. Logits are only valid
        until the next call, so only the final call may ask for them; returns their rows in that call."""
        llama_cpp = _import_llama_cpp()
        n_batch = self.n_batch
        rows: list[int] = []
        for start in range(0, len(entries), n_batch):
            chunk = entries[start:start + n_batch]
            final = start + n_batch >= len(entries)
            batch = llama_cpp.llama_batch_init(len(chunk), 0, max(len(e[2]) for e in chunk))
            try:
                for i, (tok, pos, seqs, want) in enumerate(chunk):
                    if want and not final:
                        raise RuntimeError("logits asked for outside the final decode call")
                    batch.token[i] = tok
                    batch.pos[i] = pos
                    batch.n_seq_id[i] = len(seqs)
                    for j, s in enumerate(seqs):
                        batch.seq_id[i][j] = s
                    batch.logits[i] = want
                    if want:
                        rows.append(i)
                batch.n_tokens = len(chunk)
                rc = llama_cpp.llama_decode(self._ctx, batch)
                if rc != 0:
                    raise SilverlabelError(f"llama_decode failed (code {rc}): the KV cache is full; use a "
                                           "smaller batch_items or a larger n_ctx")
            finally:
                llama_cpp.llama_batch_free(batch)
        return rows

    def _logits(self, row: int) -> np.ndarray:
        llama_cpp = _import_llama_cpp()
        n_vocab = self._llm.n_vocab()
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, row)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64, copy=True)

    def score(self, texts: Sequence[str]) -> list[Scored]:
        per_call = max(1, min(self.batch_items, (self.max_seqs - 1) // len(self.label_tokens)))
        if (self.max_seqs - 1) < len(self.label_tokens):
            raise SilverlabelError(f"{len(self.label_tokens)} labels exceed llama.cpp's {self.max_seqs - 1} "
                                   "parallel sequences; use fewer labels")
        out: list[Scored] = []
        for start in range(0, len(texts), per_call):
            out.extend(self._score_batch(texts[start:start + per_call]))
        return out

    def _score_batch(self, texts: Sequence[str]) -> list[Scored]:
        llama_cpp = _import_llama_cpp()
        mem = llama_cpp.llama_get_memory(self._ctx)
        n_labels = len(self.label_tokens)
        P = self._prefix_len
        budget = min(self.n_ctx - P, self.n_batch)  # one item must fit the cache and one decode call
        label_len = sum(len(lt) for lt in self.label_tokens)  # every label's branch shares the item's cells
        cut: set[int] = set()
        entries: list[tuple[int, int, tuple[int, ...], bool]] = []
        wanted: list[tuple[int, int, int]] = []  # (item, label, token index) for each logits row, in order
        item_tokens = []
        for i, text in enumerate(texts):
            toks, was_cut = self.token_prompt.fit(text, budget - label_len)
            item_tokens.append(toks)
            if was_cut:
                cut.add(i)
                log.info("item %d cut to %d tokens to fit n_ctx=%d", i, len(toks), self.n_ctx)
            seqs = tuple(1 + i * n_labels + k for k in range(n_labels))
            for s in seqs:
                llama_cpp.llama_memory_seq_cp(mem, 0, s, -1, -1)
            for j, tok in enumerate(toks):
                last = j == len(toks) - 1
                entries.append((tok, P + j, seqs, last))
            wanted.append((i, -1, 0))
            for k, lt in enumerate(self.label_tokens):
                for j, tok in enumerate(lt[:-1]):
                    entries.append((tok, P + len(toks) + j, (seqs[k],), True))
                    wanted.append((i, k, j + 1))
        # all logits must come from one llama_decode call (they are only valid until the next call), so the
        # entries are ordered so that logit rows fall in the final chunk; with n_batch >= the batch size this
        # is one call. Re-split into item groups when that does not hold.
        if len(entries) > self.n_batch or P + len(entries) > self.n_ctx:  # too much for one call or the cache
            if len(texts) == 1:
                raise SilverlabelError(f"one item needs {len(entries)} tokens, more than n_batch={self.n_batch} "
                                       f"or the {self.n_ctx - P} context cells after the prompt; raise them")
            half = len(texts) // 2
            self._clear(len(texts))
            return self._score_batch(texts[:half]) + self._score_batch(texts[half:])
        rows = self._decode(entries)
        logp: dict[tuple[int, int], np.ndarray] = {}
        for row, (i, k, j) in zip(rows, wanted):
            logp[(i, k, j)] = softmax_log(self._logits(row))
        results = []
        for i, toks in enumerate(item_tokens):
            first = logp[(i, -1, 0)]
            per_label = []
            for k, lt in enumerate(self.label_tokens):
                lps = [float(first[lt[0]])]
                for j in range(1, len(lt)):
                    lps.append(float(logp[(i, k, j)][lt[j]]))
                per_label.append(lps)
            results.append(Scored(token_logprobs=per_label, prompt_tokens=P + len(toks), truncated=i in cut))
        self._clear(len(texts))
        return results

    def _clear(self, n_items: int) -> None:
        llama_cpp = _import_llama_cpp()
        mem = llama_cpp.llama_get_memory(self._ctx)
        for s in range(1, 1 + n_items * len(self.label_tokens)):
            llama_cpp.llama_memory_seq_rm(mem, s, -1, -1)

    def score_naive(self, text: str) -> list[list[float]]:
        """Reference scorer: the whole prompt + each label evaluated from scratch in one sequence. Slow; used
        by tests and benchmarks to check the batched engine."""
        llama_cpp = _import_llama_cpp()
        mem = llama_cpp.llama_get_memory(self._ctx)
        toks = self.prefix_tokens + self.token_prompt.item_tokens(text)
        out = []
        for lt in self.label_tokens:
            llama_cpp.llama_memory_seq_rm(mem, 255, -1, -1)
            seq = toks + lt[:-1]
            rows = self._decode([(t, p, (255,), p >= len(toks) - 1) for p, t in enumerate(seq)])
            lps = [float(softmax_log(self._logits(r))[lt[j]]) for j, r in enumerate(rows)]
            out.append(lps)
        llama_cpp.llama_memory_seq_rm(mem, 255, -1, -1)
        return out

    def close(self) -> None:
        if self._llm is not None:
            self._context.close()
            self._llm.close()
            self._llm = None
