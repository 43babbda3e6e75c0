"""Fine-tune any Hugging Face sequence classifier with the paper's recipe, fast on a CPU.

The training loop is written here rather than with ``transformers.Trainer`` on purpose: the Trainer pads to a
fixed length, evaluates with small batches and keeps state between runs, and on 2 CPU cores that is most of the
time. Here texts are tokenised once, batches are bucketed by length and padded only to their longest member,
evaluation runs in inference mode with large sorted batches, and every run builds a fresh model from its seed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..assets import STUDENT_ASSETS, student_path
from ..config import TrainConfig
from ..data import hub_reachable, offline_mode
from ..devices import attention_kernels, pad_width
from ..errors import SilverlabelError
from .base import StudentRun, register_student

log = logging.getLogger(__name__)


PAPER_STUDENT = "roberta-base"


def resolve_model(name: str) -> str:
    """'auto' to the paper's RoBERTa-base when the hub is reachable and the shipped MiniLM otherwise; shipped
    short names ('minilm') to their verified directory; anything else is a hub name or local dir."""
    if name == "auto":
        name = PAPER_STUDENT if not offline_mode() and hub_reachable() else "minilm"
        log.info("student 'auto' is %s", name)
    if name in STUDENT_ASSETS:
        return str(student_path(name))
    path = Path(name)
    if path.exists() and not (path / "config.json").exists():
        raise SilverlabelError(f"student '{name}': folder has no config.json; point at a Hugging Face model folder")
    return name


def _tokenize(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return enc["input_ids"]


def _collate(ids: list[list[int]], pad_id: int, device):
    import torch

    width = pad_width(max(len(x) for x in ids), device)
    batch = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        batch[row, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[row, : len(x)] = 1
    return batch.to(device), mask.to(device)


def _batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket: bool) -> list[np.ndarray]:
    """Shuffled batches; with bucketing, each pool of 50 batches is sorted by length so padding is small while
    the order stays random (the idea of HF's removed ``group_by_length``)."""
    order = rng.permutation(len(lengths))
    if not bucket:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def predict_proba(model, ids: list[list[int]], pad_id: int, *, batch_size: int, device, fp16: bool,
                  unmasked_when_full: bool = False) -> np.ndarray:
    """Class probabilities in the input order, evaluated longest-first in large padded-to-fit batches.

    With ``unmasked_when_full``, a batch of equal-length texts (most of them, in a large sorted corpus) goes in
    without its all-ones attention mask, which lets SDPA take its unmasked kernel (about 10 % faster on a CPU; the
    probabilities move by float rounding only, 6e-8 measured). Off for a study's own test predictions, which must
    stay bit for bit what earlier runs computed."""
    import torch

    order = np.argsort([-len(x) for x in ids], kind="stable")
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    model.eval()
    with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.float16, enabled=fp16), \
            attention_kernels(device):
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, mask = _collate([ids[i] for i in idx], pad_id, device)
            full = unmasked_when_full and len({len(ids[i]) for i in idx}) == 1
            logits = model(input_ids=x, attention_mask=None if full else mask).logits.float()
            out[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
    return out


@register_student("hf")
def train_student(
    train_texts: Sequence[str],
    train_targets: np.ndarray,
    *,
    num_labels: int,
    config: TrainConfig,
    seed: int,
    val_texts: Sequence[str] = (),
    val_labels: np.ndarray | None = None,
    test_texts: Sequence[str] = (),
    device: str | None = None,
    progress=None,
    save_dir: str | Path | None = None,
) -> StudentRun:
    """Train a fresh student from ``seed`` (head init, data order, dropout) and predict the test texts.

    ``train_targets`` are class indices (hard labels) or an (n, K) probability matrix (soft labels). The
    checkpoint with the best validation macro-F1 is kept when ``config.select_best`` and validation data exist.
    """
    import torch

    started = time.perf_counter()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fp16 = dev.type == "cuda" and config.fp16 != "off"
    if config.fp16 == "on" and dev.type != "cuda":
        log.info("fp16 asked for but no GPU; training in fp32")
    targets = _checked_targets(train_texts, train_targets, num_labels=num_labels, config=config)
    tokenizer, model = _load(config, num_labels=num_labels, seed=seed)
    model.to(dev)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_ids = _tokenize(tokenizer, train_texts, config.max_length)
    val_ids = _tokenize(tokenizer, val_texts, config.max_length) if len(val_texts) else []
    test_ids = _tokenize(tokenizer, test_texts, config.max_length) if len(test_texts) else []
    total = config.steps(len(train_ids))
    step = _Stepper(model, config, total=total, fp16=fp16)
    batches = _Batches(train_ids, targets, pad_id, config, rng=np.random.default_rng(seed), device=dev)
    best = _BestCheckpoint(config)
    curve: list[dict] = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), attention_kernels(dev):
        torch.manual_seed(seed)  # dropout; restored on exit, so no global seed leaks to the caller
        for epoch in range(1, config.epochs + 1):
            point = {"epoch": epoch, "train_loss": _train_epoch(model, batches, step, fp16=fp16, progress=progress)}
            if val_ids and val_labels is not None:
                val_pred = predict_proba(model, val_ids, pad_id, batch_size=config.eval_batch_size, device=dev,
                                         fp16=fp16).argmax(1)
                point["val_macro_f1"] = _macro_f1(val_labels, val_pred, num_labels)
                best.consider(model, epoch, point["val_macro_f1"])
            curve.append(point)
    best.restore(model)
    if config.save_model and save_dir is not None:
        with quiet_loading():
            model.save_pretrained(save_dir, safe_serialization=True)  # safetensors only, never pickle
            tokenizer.save_pretrained(save_dir)
    probs = (predict_proba(model, test_ids, pad_id, batch_size=config.eval_batch_size, device=dev, fp16=fp16)
             if test_ids else np.zeros((0, num_labels), dtype=np.float32))
    return StudentRun(seed=seed, preds=probs.argmax(1).astype(np.int64), probs=probs, curve=curve,
                      best_epoch=best.epoch, steps=total, seconds=time.perf_counter() - started, device=dev.type)


def _checked_targets(texts: Sequence[str], train_targets, *, num_labels: int, config: TrainConfig) -> np.ndarray:
    targets = np.asarray(train_targets)
    soft = targets.ndim == 2
    if soft != (config.labels == "soft"):
        raise SilverlabelError(f"config.labels is '{config.labels}' but the targets are "
                               f"{'an (n, K) probability matrix' if soft else 'class indices'}; make them agree")
    if soft and (targets.shape[1] != num_labels or not np.allclose(targets.sum(1), 1, atol=1e-3)):
        raise SilverlabelError(f"soft targets must be ({len(targets)}, {num_labels}) rows that sum to 1")
    if len(texts) != len(targets):
        raise SilverlabelError(f"{len(texts)} training texts but {len(targets)} labels")
    return targets


@contextlib.contextmanager
def quiet_loading():
    """transformers without its weight-loading bar and its "newly initialized head" notice (expected here, not
    news: one per seed would bury the progress that matters)."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()


def _load(config: TrainConfig, *, num_labels: int, seed: int):
    """A fresh tokenizer and classifier whose new head is drawn from ``seed`` (the caller's generator untouched)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_ref = resolve_model(config.model)
    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(model_ref)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = AutoModelForSequenceClassification.from_pretrained(model_ref, num_labels=num_labels)
    except OSError as exc:
        raise SilverlabelError(f"student '{config.model}' could not be loaded ({str(exc).splitlines()[0]}); "
                               "use a hub name, a local model folder, or 'minilm' offline") from None
    return tokenizer, model


class _Stepper:
    """The paper's optimizer: AdamW with weight decay off for biases and norms, linear warm-up then decay,
    gradient clipping at 1, and a loss scaler for fp16."""

    def __init__(self, model, config: TrainConfig, *, total: int, fp16: bool):
        import torch
        import transformers

        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        groups = [
            {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
             "weight_decay": config.weight_decay},
            {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        # fused: one kernel over all parameters instead of a loop of small ops, as transformers' Trainer does by
        # default (adamw_torch_fused); a few times faster per optimizer step, about 2 % of a MiniLM run on 2 cores
        self.optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, fused=True)
        self.scheduler = transformers.get_linear_schedule_with_warmup(
            self.optimizer, num_warmup_steps=math.ceil(config.warmup_ratio * total), num_training_steps=total)
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.params = list(model.parameters())

    def __call__(self, loss) -> None:
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()


class _Batches:
    """One epoch's shuffled (length-bucketed) batches of padded inputs and their targets, on the device."""

    def __init__(self, ids: list[list[int]], targets: np.ndarray, pad_id: int, config: TrainConfig, *,
                 rng: np.random.Generator, device):
        import torch

        self.ids, self.pad_id, self.config, self.rng, self.device = ids, pad_id, config, rng, device
        self.lengths = np.array([len(x) for x in ids])
        self.soft = targets.ndim == 2
        self.targets = torch.tensor(targets, dtype=torch.float32 if self.soft else torch.long)

    def __iter__(self):
        for idx in _batches(self.lengths, self.config.batch_size, self.rng, self.config.bucket_by_length):
            x, mask = _collate([self.ids[i] for i in idx], self.pad_id, self.device)
            yield x, mask, self.targets[idx].to(self.device)


def _train_epoch(model, batches: _Batches, step: _Stepper, *, fp16: bool, progress=None) -> float:
    """One pass over the training batches; returns the mean loss (read once, so no per-step sync with a GPU)."""
    import torch

    model.train()
    losses = []
    for x, mask, y in batches:
        with torch.autocast(device_type=batches.device.type, dtype=torch.float16, enabled=fp16):
            logits = model(input_ids=x, attention_mask=mask).logits.float()
        if batches.soft:
            loss = -(y * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
        else:
            loss = torch.nn.functional.cross_entropy(logits, y)
        step(loss)
        losses.append(loss.detach())
        if progress is not None:
            progress(1)
    return float(torch.stack(losses).double().mean())


def _macro_f1(labels: np.ndarray, pred: np.ndarray, num_labels: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, pred, average="macro", labels=list(range(num_labels)), zero_division=0))


class _BestCheckpoint:
    """Keeps the weights of the epoch with the best validation macro-F1 (the first of equals), in CPU memory."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.score, self.state, self.epoch = -1.0, None, config.epochs

    def consider(self, model, epoch: int, score: float) -> None:
        if not self.config.select_best or score <= self.score:
            return
        self.score, self.epoch = score, epoch
        # the last epoch's weights are still in the model when it is the best, so no copy is needed
        self.state = (copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                      if epoch < self.config.epochs else None)

    def restore(self, model) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)
