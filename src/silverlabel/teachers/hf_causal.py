"""``hf:MODEL`` — a transformers causal LM in process, batched, on CPU or GPU (for GPU machines without a server).

MODEL is one of:

- a hub name (``Qwen/Qwen2.5-0.5B-Instruct``), optionally ``@REVISION``;
- a local model directory (``config.json`` and weights);
- a ``.gguf`` file (``hf:/models/qwen.gguf``), or a shipped GGUF by short name (``hf:smollm2-135m``): loaded
  through transformers' ``gguf_file``, which dequantises the weights (needs ``pip install 'silverlabel[hf]'``);
- a GGUF file inside a hub repository or a directory: ``hf:REPO_OR_DIR#FILE.gguf``.

Scoring mirrors the llamacpp backend (same prompt split, label tokens and terminator), in two forward passes per
batch over a KV cache of the shared prefix, computed once per prompt and expanded across the batch: (1) each
item's own tokens, left-padded so every last position lines up and only one logits row per item is computed;
(2) that cache repeated once per label and every label's continuation in one padded batch. Padding sits between
the prefix and the item, so explicit position ids and the attention mask keep each row's arithmetic that of its
unpadded prompt.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..devices import attention_kernels, pad_width
from ..errors import SilverlabelError
from .base import Scored, Teacher, TeacherOptions, register_teacher
from .prompts import Prompt
from .token_prompt import TokenPrompt, render

log = logging.getLogger(__name__)

_DTYPES = ("auto", "float32", "float16", "bfloat16")


def _import_torch_transformers():
    try:
        import torch
        import transformers
    except ImportError:
        raise SilverlabelError("the hf teacher needs torch and transformers: pip install silverlabel") from None
    return torch, transformers


def parse_model(model: str) -> dict:
    """Where the weights are: ``{"source": hub name or directory, "gguf_file": name or None, "revision": ...,
    "local": bool, "path": Path of a local .gguf or None, "id": cache-key id}``."""
    from ..assets import GGUF_ASSETS, gguf_path

    if model in GGUF_ASSETS:  # the shipped file, which transformers dequantizes to float32 itself (the F16 copy
        path = gguf_path(model)  # of assets.engine_gguf_path is for llama.cpp's kernels)
        return {"source": str(path.parent), "gguf_file": path.name, "revision": None, "local": True, "path": path,
                "id": GGUF_ASSETS[model].cache_id}
    source, sep, gguf_file = model.partition("#")
    if sep and not gguf_file.lower().endswith(".gguf"):
        raise SilverlabelError(f"teacher 'hf:{model}': after '#' comes a .gguf file name, e.g. "
                               "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF#qwen2.5-0.5b-instruct-q4_k_m.gguf")
    path = Path(source).expanduser()
    if not sep and source.lower().endswith(".gguf"):
        from .llamacpp import resolve_gguf

        path, gid = resolve_gguf(str(path))  # checks existence and magic bytes
        return {"source": str(path.parent), "gguf_file": path.name, "revision": None, "local": True, "path": path,
                "id": gid}
    if path.is_dir():
        if sep and not (path / gguf_file).is_file():
            raise SilverlabelError(f"teacher 'hf:{model}': {path / gguf_file} not found")
        if not sep and not (path / "config.json").is_file():
            raise SilverlabelError(f"teacher 'hf:{model}': {path} has no config.json; is it a model directory?")
        return {"source": str(path), "gguf_file": gguf_file or None, "revision": None, "local": True,
                "path": path / gguf_file if sep else None, "id": None}
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise SilverlabelError(f"teacher 'hf:{model}': {path} not found (give a hub name, a model directory or a "
                               ".gguf file)")
    name, _, revision = source.partition("@")
    return {"source": name, "gguf_file": gguf_file or None, "revision": revision or None, "local": False,
            "path": None, "id": None}


def _dir_fingerprint(folder: Path, gguf_file: str | None) -> str:
    """Content hash of the small files (config, tokenizer, chat template) and name+size of the weights: hashing
    gigabytes of weights on every run would cost more than most annotation runs."""
    digest = hashlib.sha256()
    files = [folder / gguf_file] if gguf_file else sorted(p for p in folder.iterdir() if p.is_file())
    for p in files:
        digest.update(p.name.encode())
        if p.suffix in (".json", ".jinja", ".txt", ".model") and p.stat().st_size < 50_000_000:
            digest.update(p.read_bytes())
        else:
            digest.update(str(p.stat().st_size).encode())
    return digest.hexdigest()[:12]


_GGUF_PATCH = threading.RLock()


@contextlib.contextmanager
def _gguf_read_once():
    """While transformers loads a .gguf file, gguf-py's work that depends only on its arguments is done once:
    transformers rebuilds the tensor-name map for every module (397 times for SmolLM2) and parses the whole file
    twice, for the config and again for the weights, most of it the 49,152-token vocabulary (docs/testing.md has
    the times). Both are cached for the load only: the reader maps the file, released when the load ends. The patch
    is process-wide (other gguf-py users in the meantime get the cached ones too); loads in several threads take
    turns, so none restores another's patch as the original."""
    try:
        import gguf
    except ImportError:
        yield
        return
    with _GGUF_PATCH:
        name_map, reader = gguf.get_tensor_name_map, gguf.GGUFReader
        try:
            gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
            gguf.GGUFReader = functools.lru_cache(maxsize=None)(reader)  # transformers imports it at each call
            yield
        finally:
            gguf.get_tensor_name_map, gguf.GGUFReader = name_map, reader


class HFOptions(TeacherOptions):
    """``[teachers.options]`` of an ``hf:`` teacher."""

    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_items: int = Field(16, ge=1)
    max_length: int | None = Field(None, ge=16)


class _HFVocab:
    """A transformers tokenizer as the token-level prompt's :class:`~.token_prompt.Vocabulary`."""

    def __init__(self, tok, model: str):
        self.tok, self.model = tok, model
        self._special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}

    def tokens(self, text: str, *, special: bool) -> list[int]:
        return list(self.tok(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"])

    def prefix_tokens(self, prefix: str) -> list[int]:
        tok, bos = self.tok, self.tok.bos_token_id
        adds_bos = bos is not None and tok("", add_special_tokens=True)["input_ids"][:1] == [bos]
        return ([bos] if adds_bos and not prefix.startswith(tok.bos_token) else []) + self.tokens(prefix, special=True)

    def is_special(self, token: int) -> bool:
        return token in self._special

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def apply_chat(self, messages: list[dict], generation: bool) -> str:
        if not self.tok.chat_template:
            raise SilverlabelError(f"teacher 'hf:{self.model}' has no chat template; use the raw prompt "
                                   "(--raw-prompt)")
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    def eos(self) -> int:
        if self.tok.eos_token_id is None:
            raise SilverlabelError(f"teacher 'hf:{self.model}' has no end-of-sequence token to end a label with")
        return self.tok.eos_token_id


@register_teacher(options=HFOptions)
class HFCausalTeacher(Teacher):
    """``hf:MODEL`` — transformers ``AutoModelForCausalLM``; see the module docstring for MODEL."""

    backend = "hf"

    def __init__(self, model: str, *, chat: bool = True, device: str = "auto", dtype: str = "auto",
                 batch_items: int = 16, max_length: int | None = None, p_s: str = "sequence"):
        super().__init__(model, chat=chat, p_s=p_s)
        if dtype not in _DTYPES:
            raise SilverlabelError(f"dtype '{dtype}' is unknown; choose one of {', '.join(_DTYPES)}")
        if batch_items < 1:
            raise SilverlabelError(f"batch_items must be 1 or more, got {batch_items}")
        self.where = parse_model(model)
        self.device_option = device
        self.dtype_option = dtype
        self.batch_items = batch_items
        self.max_length = max_length
        self._id: str | None = None
        self._model = None
        self._tok = None
        self.token_prompt: TokenPrompt | None = None

    # ------------------------------------------------------------------ model
    def _device_dtype(self):
        torch, _ = _import_torch_transformers()
        device = self.device_option
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.dtype_option
        if dtype == "auto":  # half precision only where the hardware computes in it
            if device.startswith("cuda"):
                dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
            else:
                dtype = "float32"
        return device, dtype

    @property
    def model_id(self) -> str:
        """The weights (file hash, directory fingerprint or hub commit) and the dtype they are computed in."""
        if self._id is None:
            w = self.where
            if w["id"] is not None:
                base = w["id"]
            elif w["local"]:
                base = f"{Path(w['source']).name}@{_dir_fingerprint(Path(w['source']), w['gguf_file'])}"
            else:
                base = f"{w['source']}{'#' + w['gguf_file'] if w['gguf_file'] else ''}@{self._hub_commit()}"
            self._id = f"{self.backend}:{base}:{self._device_dtype()[1]}"
        return self._id

    def _hub_commit(self) -> str:
        """The commit the hub name resolves to (the cached one offline), so a re-pushed model is a new key."""
        from transformers.utils.hub import cached_file

        w = self.where
        try:
            found = cached_file(w["source"], w["gguf_file"] or "config.json", revision=w["revision"])
        except OSError as exc:
            raise SilverlabelError(f"teacher 'hf:{self.model}': {exc}") from None
        parts = Path(found).parts
        return parts[parts.index("snapshots") + 1][:12] if "snapshots" in parts else (w["revision"] or "local")

    def _load(self):
        if self._model is None:
            torch, transformers = _import_torch_transformers()
            w = self.where
            if w["gguf_file"]:
                try:
                    import gguf  # noqa: F401
                except ImportError:
                    raise SilverlabelError("loading a .gguf file with transformers needs gguf: pip install "
                                           "'silverlabel[hf]'") from None
            device, dtype = self._device_dtype()
            kw = {"gguf_file": w["gguf_file"]} if w["gguf_file"] else {}
            if w["revision"]:
                kw["revision"] = w["revision"]
            try:
                with _gguf_read_once() if w["gguf_file"] else contextlib.nullcontext():
                    self._tok = transformers.AutoTokenizer.from_pretrained(w["source"], **kw)
                    self._model = transformers.AutoModelForCausalLM.from_pretrained(
                        w["source"], dtype=getattr(torch, dtype), **kw).to(device).eval()
            except (OSError, ValueError, RuntimeError) as exc:
                raise SilverlabelError(f"teacher 'hf:{self.model}': transformers could not load it ({exc})") \
                    from None
            self._device = torch.device(device)
            # transformers 5 renamed past_key_values to cache (the old name warns, and goes in 5.40)
            params = inspect.signature(self._model.forward).parameters
            self._cache_arg = "cache" if "cache" in params else "past_key_values"
            limit = getattr(self._model.config, "max_position_embeddings", None) or 4096
            self._limit = min(limit, self.max_length) if self.max_length else limit
        return self._model

    @staticmethod
    def _cache_of(out):
        return out.cache if getattr(out, "cache", None) is not None else out.past_key_values

    # ------------------------------------------------------------------ prompt
    def _vocab(self) -> _HFVocab:
        self._load()
        return _HFVocab(self._tok, self.model)

    def render(self, prompt: Prompt) -> tuple[str, str]:
        """The prompt as the model sees it (inside its chat template unless raw), split at the item's text."""
        return render(self._vocab(), prompt, chat=self.chat)

    def prepare(self, prompt: Prompt) -> None:
        torch, transformers = _import_torch_transformers()
        model = self._load()
        self._prepare_tokens(prompt)
        with torch.inference_mode(), attention_kernels(self._device):
            ids = torch.tensor([self.prefix_tokens], device=self._device)
            cache = transformers.DynamicCache(config=model.config)
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_arg: cache})
        self._prefix_kv = [(layer.keys, layer.values) for layer in self._cache_of(out).layers]
        self.prompt = prompt

    def _prepare_tokens(self, prompt: Prompt) -> None:
        """The token-level prompt, which the vllm backend shares (it reads the same tokenizer)."""
        self.token_prompt = TokenPrompt.build(self._vocab(), prompt, chat=self.chat)
        self.prefix_tokens = self.token_prompt.prefix_tokens
        self.terminator = self.token_prompt.terminator
        self.label_tokens = self.token_prompt.label_tokens
        pad = self._tok.pad_token_id
        self._pad = pad if pad is not None else self.terminator

    def _fit_item(self, text: str) -> tuple[list[int], bool]:
        """The item's tokens, cut to fit the model's context with the longest label after it."""
        room = self._limit - len(self.prefix_tokens) - max(len(t) for t in self.label_tokens)
        return self.token_prompt.fit(text, room)

    # ------------------------------------------------------------------ scoring
    def score(self, texts: Sequence[str]) -> list[Scored]:
        if self.prompt is None:
            raise SilverlabelError("prepare(prompt) must be called before score()")
        fitted = [self._fit_item(t) for t in texts]
        item_tokens = [toks for toks, _ in fitted]
        order = sorted(range(len(texts)), key=lambda i: len(item_tokens[i]))  # similar lengths pad less
        out: list[Scored | None] = [None] * len(texts)
        for start in range(0, len(order), self.batch_items):
            chunk = order[start:start + self.batch_items]
            for i, scored in zip(chunk, self._score_batch([item_tokens[i] for i in chunk])):
                scored.truncated = fitted[i][1]
                out[i] = scored
        return out  # type: ignore[return-value]

    def _score_batch(self, items: list[list[int]]) -> list[Scored]:
        torch, transformers = _import_torch_transformers()
        model, dev = self._model, self._device
        B, K, P = len(items), len(self.label_tokens), len(self.prefix_tokens)
        L = pad_width(max(len(t) for t in items), dev)
        ids = torch.full((B, L), self._pad, dtype=torch.long)
        item_mask = torch.zeros((B, L), dtype=torch.long)
        pos = torch.full((B, L), P, dtype=torch.long)
        for b, toks in enumerate(items):  # left padding: every item's last token sits in the last column
            n = len(toks)
            ids[b, L - n:] = torch.tensor(toks)
            item_mask[b, L - n:] = 1
            pos[b, L - n:] = torch.arange(P, P + n)
        T = max(len(lt) for lt in self.label_tokens) - 1  # label tokens fed to the model (all but the last)
        lab_ids = torch.full((K, T), self._pad, dtype=torch.long)
        lab_mask = torch.zeros((K, T), dtype=torch.long)
        for k, lt in enumerate(self.label_tokens):
            lab_ids[k, :len(lt) - 1] = torch.tensor(lt[:-1])
            lab_mask[k, :len(lt) - 1] = 1
        lengths = torch.tensor([len(t) for t in items])
        with torch.inference_mode(), attention_kernels(dev):
            cache = transformers.DynamicCache(
                ddp_cache_data=[(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)) for k, v in self._prefix_kv],
                config=model.config)
            mask1 = torch.cat([torch.ones((B, P), dtype=torch.long), item_mask], 1)
            out1 = model(input_ids=ids.to(dev), attention_mask=mask1.to(dev), position_ids=pos.to(dev),
                         use_cache=True, logits_to_keep=1, **{self._cache_arg: cache})
            first = torch.log_softmax(out1.logits[:, -1, :].float(), -1).cpu()  # (B, V)
            cache = self._cache_of(out1)
            cache.batch_repeat_interleave(K)  # row b*K + k: item b followed by label k
            mask2 = torch.cat([mask1.repeat_interleave(K, 0), lab_mask.repeat(B, 1)], 1)
            pos2 = (P + lengths).repeat_interleave(K)[:, None] + torch.arange(T)[None, :]
            out2 = model(input_ids=lab_ids.repeat(B, 1).to(dev), attention_mask=mask2.to(dev),
                         position_ids=pos2.to(dev), use_cache=False, logits_to_keep=T, **{self._cache_arg: cache})
            # position j of a label row predicts that label's token j + 1: gather just those log-probabilities
            targets = torch.full((K, T), 0, dtype=torch.long)
            for k, lt in enumerate(self.label_tokens):
                targets[k, :len(lt) - 1] = torch.tensor(lt[1:])
            rest = torch.log_softmax(out2.logits.float(), -1).gather(
                -1, targets.repeat(B, 1).to(dev)[..., None])[..., 0].cpu()  # (B*K, T)
        results = []
        for b, toks in enumerate(items):
            per_label = [[float(first[b, lt[0]])] + [float(rest[b * K + k, j]) for j in range(len(lt) - 1)]
                         for k, lt in enumerate(self.label_tokens)]
            results.append(Scored(token_logprobs=per_label, prompt_tokens=P + len(toks)))
        return results

    def score_naive(self, text: str) -> list[list[float]]:
        """Reference scorer: the whole prompt + each label in one unpadded sequence, no cache. Slow; for tests."""
        torch, _ = _import_torch_transformers()
        toks = self.prefix_tokens + self.token_prompt.item_tokens(text)
        out = []
        with torch.inference_mode():
            for lt in self.label_tokens:
                ids = torch.tensor([toks + lt[:-1]], device=self._device)
                logp = torch.log_softmax(self._model(input_ids=ids).logits[0].float(), -1)
                out.append([float(logp[len(toks) - 1 + j, t]) for j, t in enumerate(lt)])
        return out

    def close(self) -> None:
        self._model = None
        self._prefix_kv = []
        self.prompt = None  # the prefix cache is gone: a later annotate() must prepare again
