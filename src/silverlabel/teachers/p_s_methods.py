"""How a hosted chat API's replies become P_S, one small object per way (``p_s_method``), registered by name.

A hosted API shows no token ids and at most the top 20 log-probabilities per position (OpenAI), or none at all
(Anthropic), so the exact sequence probability the local backends compute is out of reach there. Each method
below asks for what the API allows and records how it made the distribution and how much of it it saw:

``token_ids``     vLLM's ``logprob_token_ids`` on its chat endpoint: the model's own log-probability of every
                  label token at the branching steps, renormalised per step (P_S as ``p_s = "guided"``); exact.
``top_logprobs``  the answer constrained to the labels, P_S from the top-k log-probabilities at the positions
                  where the labels part ways, renormalised over the labels there; a label missing from the top-k
                  has at most the smallest listed probability, and that bound is recorded as unobserved mass.
``sample``        k answers at temperature 1, P_S their label frequencies smoothed by ``sample_smoothing``.
``verbalized``    the model is asked for a probability per label as JSON; parsed and normalised.
``label``         the constrained answer alone, as a one-hot P_S (marked: nothing else was allowed).

An answer outside the label set is the item's failure, never mapped to the nearest label.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .base import Scored, Usage
from .transport import ItemFailed
from .trie import read_walk, unread_nodes, walk_steps, walked_logprobs


@dataclass
class Step:
    """One generated token: its text, log-probability, and the top alternatives the server listed there."""

    text: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)


@dataclass
class Reply:
    """What one request gave: the answer text of each choice, their token steps (when log-probabilities were
    asked for and given), and the request's usage."""

    texts: list[str]
    steps: list[list[Step]] | None
    usage: Usage


@dataclass(frozen=True)
class AnswerFormat:
    """How the answer is held to the label set: the server's choice constraint (vLLM's ``structured_outputs``),
    a JSON schema with an ``enum`` (OpenAI's structured output), or only the prompt's instruction."""

    kind: str  # "choice", "json" or "instruction"

    def label_of(self, text: str, names: Sequence[str]) -> int | None:
        """The label the answer names, or None when it names none exactly (whitespace around it aside)."""
        value: object = text
        if self.kind == "json":
            try:
                value = json.loads(text).get("label")
            except (ValueError, AttributeError):
                return None
        if not isinstance(value, str):
            return None
        value = value.strip()
        return list(names).index(value) if value in names else None

    def schema(self, names: Sequence[str]) -> dict | None:
        if self.kind != "json":
            return None
        return {"type": "object", "properties": {"label": {"type": "string", "enum": list(names)}},
                "required": ["label"], "additionalProperties": False}


def _with_usage(exc: ItemFailed, spent: Usage) -> ItemFailed:
    """The failure with what the item's earlier requests cost added, so a failed item's money is not lost."""
    total = Usage()
    total.add(spent)
    if exc.usage is not None:
        total.add(exc.usage)
    return type(exc)(str(exc), exc.status, unreachable=exc.unreachable, usage=total)


class Unusable(ItemFailed):
    """The API answered, but the answer cannot be used (not a label, no probabilities): the item's failure, not
    the API refusing the method."""


def answer_tokens(names: Sequence[str]) -> int:
    """max_tokens for a label answer (JSON-wrapped at most): one token per byte at worst, plus the wrapper."""
    return max(len(n.encode("utf-8")) for n in names) + 16


class PSMethod(ABC):
    """One way of making P_S from a chat API's replies. ``teacher`` in its methods is the hosted teacher
    (:class:`.hosted.HostedTeacher`) that drives it: its ``send``, ``api``, label names and options."""

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()  # what the API must allow: "logprobs", "token_ids"
    estimate: ClassVar[bool] = True  # an estimate of P_S rather than the model's own numbers (exact or bounded)
    batchable: ClassVar[bool] = True  # its requests are known before any answer (so one batch can carry them)

    def requests_per_item(self, teacher) -> int:
        return 1

    def output_tokens(self, teacher) -> int:
        """Tokens generated per item at most (what a dry run prices)."""
        return answer_tokens(teacher.label_names) * self.requests_per_item(teacher)

    def probe(self, teacher, messages: list[dict]) -> None:
        """Raise :class:`ItemFailed` when this API cannot serve the method (called once, on a probe item)."""
        self.score(teacher, messages)

    @abstractmethod
    def score(self, teacher, messages: list[dict]) -> Scored:
        """One item's label and P_S."""


P_S_METHOD_CLASSES: dict[str, type[PSMethod]] = {}


def register_p_s_method(cls: type[PSMethod]) -> type[PSMethod]:
    P_S_METHOD_CLASSES[cls.name] = cls
    return cls


def _constrained(teacher, messages: list[dict], **fields) -> tuple[Reply, int]:
    """A temperature-0 answer held to the labels, and the label it names (an answer outside them fails)."""
    names = teacher.label_names
    reply = teacher.send(messages, max_tokens=answer_tokens(names), temperature=0.0, answer=teacher.answer, **fields)
    k = teacher.answer.label_of(reply.texts[0], names) if reply.texts else None
    if k is None:
        raise Unusable(f"the answer {reply.texts[0] if reply.texts else None!r} is not one of the labels",
                         usage=reply.usage)
    return reply, k


@register_p_s_method
class LabelOnly(PSMethod):
    """The answer as a one-hot P_S, for APIs that allow nothing else."""

    name = "label"

    def score(self, teacher, messages):
        reply, k = _constrained(teacher, messages)
        p = np.zeros(len(teacher.label_names))
        p[k] = 1.0
        return Scored([], reply.usage.prompt_tokens, choice=k, probs=p.tolist(), p_s_method=self.name,
                      observed=1.0, usage=reply.usage)


@register_p_s_method
class TopLogprobs(PSMethod):
    name = "top_logprobs"
    needs = frozenset({"logprobs"})
    estimate = False  # the server's own numbers; what they leave out is bounded and recorded

    def score(self, teacher, messages):
        reply, k = _constrained(teacher, messages, top_logprobs=teacher.top_logprobs)
        if not reply.steps or not reply.steps[0]:
            raise Unusable("the reply carries no log-probabilities (does the API allow logprobs for this model?)",
                             usage=reply.usage)
        try:
            probs, observed = top_logprob_distribution(reply.texts[0], reply.steps[0], teacher.label_names, k)
        except Unusable as exc:
            raise Unusable(str(exc), usage=reply.usage) from None
        return Scored([], reply.usage.prompt_tokens, choice=k, probs=probs, p_s_method=self.name,
                      observed=observed, usage=reply.usage)


def top_logprob_distribution(text: str, steps: Sequence[Step], names: Sequence[str],
                             chosen: int) -> tuple[list[float], float]:
    """P_S from a constrained answer's top log-probabilities, and the share of its mass they cover.

    P_S here is the distribution guided decoding samples a label from: at each step the allowed tokens (those
    that keep some label possible, in any tokenisation: an API shows no token ids, so "h" and "hat" both start
    "hate speech") renormalised over each other. Walk the generated tokens; at each position, the listed tokens
    that start only labels parting from the answer there give those labels their mass (shared equally by labels
    a token starts alike), and the generated token with every listed token that keeps the answer's own labels
    possible gives the rest, which the following positions split further. A label with no listed token gets 0.
    What the list leaves out (1 minus the listed probabilities, u) may hold more of the labels' tokens; after
    renormalising over the labels' mass z it can move P_S by at most u / (z + u) in total variation, so
    ``observed`` is the product of z / (z + u) over the positions where labels part. Hand-written: no library
    reads P_S off an API's top-k lists."""
    spelled = "".join(s.text for s in steps)
    if text.strip() and text.strip() in spelled:
        # the tokens may hold more than the answer the server returned (llama-server generates a ```json fence
        # around a JSON answer and strips it): read the answer where it sits among the tokens
        text = spelled
    elif not text.startswith(spelled):
        raise Unusable("the reply's log-probabilities do not spell its answer")
    start = text.rfind(names[chosen])
    if start < 0:
        raise Unusable("the reply's log-probabilities do not spell its answer")
    rest = text[start + len(names[chosen]):]
    answers = [text[:start] + n + rest for n in names]
    probs = [0.0] * len(names)
    path, observed = 1.0, 1.0
    alive = set(range(len(names)))
    done = ""
    for step in steps:
        after = done + step.text
        going = {j for j in alive if answers[j].startswith(after) or after.startswith(answers[j])}
        parting = alive - going
        if parting:
            top = {t: math.exp(v) for t, v in step.top.items() if t and math.isfinite(v)}
            top[step.text] = math.exp(step.logprob)
            unlisted = max(0.0, 1.0 - sum(top.values()))  # what the list leaves out, labels' tokens among it
            m_go, shares = 0.0, {j: 0.0 for j in parting}
            for token, p in top.items():
                starts = {j for j in alive if answers[j][len(done):].startswith(token)}
                if starts & going:
                    m_go += p  # another spelling of the answer's own labels
                elif starts:
                    for j in starts:
                        shares[j] += p / len(starts)
            z = m_go + sum(shares.values())
            if not z > 0:
                raise Unusable("the reply lists no probability for any label at the position where they part")
            for j in parting:
                probs[j] = path * shares[j] / z
            observed *= z / (z + unlisted)
            path *= m_go / z
        alive = going
        done = after
        if alive == {chosen}:
            break
    if alive - {chosen}:
        # a label the answer's listed tokens never part from (one label ends where the other goes on, and the
        # server lists no token after the answer): its share is not seen at all
        observed = 0.0
    probs[chosen] = path
    total = sum(probs)
    return [p / total for p in probs], observed


@register_p_s_method
class Sample(PSMethod):
    """k answers at temperature 1 (one request with ``n = k`` where the API allows it, else k requests)."""

    name = "sample"

    def requests_per_item(self, teacher):
        return 1 if teacher.api.can_n else teacher.samples

    def output_tokens(self, teacher):
        return answer_tokens(teacher.label_names) * teacher.samples

    def probe(self, teacher, messages):
        reply = teacher.send(messages, max_tokens=answer_tokens(teacher.label_names), temperature=1.0,
                             answer=teacher.answer, n=min(2, teacher.samples) if teacher.api.can_n else 1)
        if not reply.texts:
            raise ItemFailed("the reply has no answers")

    def score(self, teacher, messages):
        names, k = teacher.label_names, teacher.samples
        texts, usage = [], Usage()
        if teacher.api.can_n:
            reply = teacher.send(messages, max_tokens=answer_tokens(names), temperature=1.0, answer=teacher.answer,
                                 n=k, seed=teacher.seed)
            texts, usage = reply.texts, reply.usage
        else:
            for i in range(k):
                try:
                    reply = teacher.send(messages, max_tokens=answer_tokens(names), temperature=1.0,
                                         answer=teacher.answer, seed=None if teacher.seed is None else teacher.seed + i)
                except ItemFailed as exc:
                    raise _with_usage(exc, usage) from None
                texts += reply.texts
                usage.add(reply.usage)
        counts = np.zeros(len(names))
        for t in texts:
            j = teacher.answer.label_of(t, names)
            if j is not None:
                counts[j] += 1
        valid = int(counts.sum())
        if valid == 0:
            raise Unusable(f"none of the {len(texts)} sampled answers is one of the labels (e.g. "
                             f"{texts[0] if texts else None!r})", usage=usage)
        a = teacher.sample_smoothing
        p = (counts + a) / (valid + a * len(names))
        per_request = usage.prompt_tokens // max(usage.requests, 1)  # the item's prompt; usage has them all
        return Scored([], per_request, choice=int(np.argmax(p)), probs=p.tolist(), p_s_method=self.name,
                      observed=valid / max(len(texts), 1), usage=usage)


VERBALIZED_INSTRUCTION = ("Instead of the label alone, answer with a JSON object that gives, for every label, the "
                          "probability (a number from 0 to 1) that it is the correct one; the probabilities add up "
                          "to 1. Keys: {labels}.")


@register_p_s_method
class Verbalized(PSMethod):
    """The model's stated probability per label (a JSON object), normalised."""

    name = "verbalized"

    def output_tokens(self, teacher):
        return sum(len(n.encode("utf-8")) + 10 for n in teacher.label_names) + 16

    def score(self, teacher, messages):
        names = teacher.label_names
        ask = VERBALIZED_INSTRUCTION.format(labels=", ".join(json.dumps(n) for n in names))
        if messages[0]["role"] == "system":
            messages = [{**messages[0], "content": messages[0]["content"] + "\n" + ask}, *messages[1:]]
        else:
            messages = [{"role": "system", "content": ask}, *messages]
        schema = {"type": "object", "properties": {n: {"type": "number", "minimum": 0, "maximum": 1} for n in names},
                  "required": list(names), "additionalProperties": False}
        reply = teacher.send(messages, max_tokens=self.output_tokens(teacher), temperature=0.0,
                             answer=AnswerFormat("json" if teacher.answer.kind != "instruction" else "instruction"),
                             schema=schema)
        text = reply.texts[0] if reply.texts else ""
        try:
            value = json.loads(text[text.index("{"):text.rindex("}") + 1])
            p = np.array([float(value[n]) for n in names])
        except (ValueError, KeyError, TypeError):
            raise Unusable(f"the answer {text[:120]!r} is not a probability for every label", usage=reply.usage) \
                from None
        if not np.all(np.isfinite(p)) or (p < 0).any() or p.sum() <= 0:
            raise Unusable(f"the stated probabilities {text[:120]!r} are not a distribution", usage=reply.usage)
        p = p / p.sum()
        return Scored([], reply.usage.prompt_tokens, choice=int(np.argmax(p)), probs=p.tolist(),
                      p_s_method=self.name, observed=1.0, usage=reply.usage)


@register_p_s_method
class TokenIds(PSMethod):
    """vLLM's chat endpoint with ``logprob_token_ids``: the label trie walked as the ``openai:`` teacher walks it
    (every node for ``p_s = "sequence"``, the branching ones for ``"guided"``), each node's children read as the
    model's own log-probabilities; the base class makes P_S and the guided label from them, as for a local model."""

    name = "token_ids"
    needs = frozenset({"token_ids"})
    estimate = False
    batchable = False  # each walk starts where the answers before it branched

    def requests_per_item(self, teacher):
        """At most: one walk per label for the sequence probability, one per branching node for guided."""
        if teacher.p_s == "sequence":
            return max(1, len(teacher.label_tokens))
        return 1 + sum(1 for node, kids in teacher.trie.items() if node and len(kids) > 1)

    def score(self, teacher, messages):
        trie, needed = teacher.trie, teacher.needed_nodes(teacher.trie)
        got: dict = {}
        done: set = set()
        starts: list[tuple[int, ...]] = [()]
        usage, prompt_tokens = Usage(), None
        while starts:
            for node in starts:
                try:
                    row, used = teacher.transport.call(
                        lambda n=node: teacher.api.walk(messages, teacher.prefix_text[n], teacher.trie_tokens,
                                                        walk_steps(needed, [n])), what=teacher.model_id)
                except ItemFailed as exc:
                    raise _with_usage(exc, usage) from None
                usage.add(used)
                prompt_tokens = used.prompt_tokens if prompt_tokens is None else prompt_tokens
                read_walk(trie, node, row, done, got)
            starts = unread_nodes(trie, done, needed)
        return Scored(walked_logprobs(teacher.label_tokens, got), prompt_tokens or 0, p_s_method=self.name,
                      usage=usage)
