"""The three ways the ``openai:`` teacher scores labels on a ``/v1/completions`` server, one small object each.

The OpenAI API has no "score this continuation" call; which of these a server allows is found by probing (see
``openai_server.py``'s docstring for when each is chosen). Each way prepares itself on one probe item (checking
that the server really reports the model's log-probabilities that way) and then scores one item per call; all
talk to the server through the :class:`Completions` the teacher passes in, so they hold no HTTP or tokenizer code.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Protocol

from ..errors import SilverlabelError
from .base import Scored
from .openai_wire import TOKEN_KEY, ItemFailed, finite_logprob, first_choice, logprobs_of, snippet, usage_of
from .trie import label_trie, read_walk, unread_nodes, walk_steps, walked_logprobs

log = logging.getLogger(__name__)

FORCE_BIAS = 100  # the top of OpenAI's logit_bias range: the forced token wins at temperature 0
MAX_TOKEN_IDS = 128  # vLLM's MAX_LOGPROB_TOKEN_IDS

Terminator = tuple[str, int] | None  # the text and id of the token that ends an answer, when it is one token
NeededNodes = Callable[[dict[tuple[int, ...], list[int]]], set[tuple[int, ...]]]


class Completions(Protocol):
    """What a scoring way needs of its server (the ``openai:`` teacher)."""

    model_id: str

    def complete(self, prompt_text: str | list[str], *, retries: int | None = None, **fields) -> dict: ...

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, ids: list[int]) -> str: ...

    def redact(self, text: str) -> str: ...


def refuse_prefix_labels(names: list[str], label_ids: list[list[int]]) -> None:
    """Without a scored terminator, a label whose tokens begin another label's cannot be told apart from it."""
    for a, ids_a in zip(names, label_ids):
        for b, ids_b in zip(names, label_ids):
            if a != b and ids_b[:len(ids_a)] == ids_a:
                raise SilverlabelError(
                    f"label '{a}' is a prefix of '{b}' for this model, and this server cannot score the end of an "
                    "answer to tell them apart; rename one of them")


def top_at(server: Completions, context: str, token: int) -> tuple[dict, float | None]:
    """The top log-probabilities of a generation right after ``context``. When the model's best token ends
    generation, servers report nothing, so ``token`` is then forced and its log-probability returned too."""
    lp = logprobs_of(first_choice(server.complete(context, max_tokens=1, logprobs=5)))
    forced = None
    if not lp["token_logprobs"]:
        lp = logprobs_of(first_choice(server.complete(context, max_tokens=1, logprobs=5,
                                                      logit_bias={str(token): FORCE_BIAS})))
        forced = finite_logprob(lp["token_logprobs"][0], "the forced token") if lp["token_logprobs"] else None
    tops = lp.get("top_logprobs")
    top = tops[0] if isinstance(tops, list) and tops and isinstance(tops[0], dict) else {}
    numeric = {t: float(v) for t, v in top.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return numeric, forced


def label_prefixes(server: Completions, names: list[str], lead: str) -> tuple[list[list[int]], dict]:
    """Each label's token ids, and the text of every prefix of them (checked to round-trip through the server's
    tokenizer, since prefixes are sent as text)."""
    label_ids = [server.tokenize(lead + n) for n in names]
    prefix_text: dict[tuple[int, ...], str] = {(): ""}
    for name, ids in zip(names, label_ids):
        if not ids:
            raise SilverlabelError(f"label '{name}' tokenises to nothing")
        for j in range(1, len(ids) + 1):
            key = tuple(ids[:j])
            if key not in prefix_text:
                text = lead + name if j == len(ids) else server.detokenize(list(key))
                if not (lead + name).startswith(text):
                    raise ItemFailed(f"the server's tokenizer does not round-trip label '{name}'")
                prefix_text[key] = text
    return label_ids, prefix_text


class CompletionScoring:
    """One way to score labels. After :meth:`prepare`, ``label_tokens`` holds each label's token ids (the
    terminator's last where it is scored) and ``terminator`` its text or None."""

    name = ""

    def __init__(self, server: Completions, needed_nodes: NeededNodes):
        self.server = server
        self.needed_nodes = needed_nodes  # the trie nodes the teacher's P_S reads (all, or only the branching)
        self.label_tokens: list[list[int]] = []
        self.terminator: str | None = None

    def prepare(self, names: list[str], lead: str, term: Terminator, context: str) -> None:
        raise NotImplementedError

    def score(self, context: str) -> Scored:
        raise NotImplementedError


class Echo(CompletionScoring):
    """``echo``: the prompt + label (+ terminator) echoed back with its log-probabilities; one request per label."""

    name = "echo"

    def prepare(self, names: list[str], lead: str, term: Terminator, context: str) -> None:
        self.terminator = term[0] if term else None
        self._answers = [lead + n + (term[0] if term else "") for n in names]
        self.label_tokens = [self.server.tokenize(a) for a in self._answers]
        # the echoed row at the first label token must be the distribution a generation there sees: the same
        # best log-probability, and the same value for the label's token
        values, piece, echo_top, _ = self._label(context, 0)
        gen_top, forced = top_at(self.server, context, self.label_tokens[0][0])
        pairs = []
        if gen_top and echo_top:
            pairs.append(("the best token", max(echo_top.values()), max(gen_top.values())))
        if piece in gen_top:
            pairs.append((repr(piece), values[0], gen_top[piece]))
        elif forced is not None:
            pairs.append((repr(piece), values[0], forced))
        if not pairs:
            log.warning("%s: the server lists no top log-probabilities, so echo alignment is unchecked",
                        self.server.model_id)
        for what, echoed, generated in pairs:
            if abs(float(echoed) - float(generated)) > 0.05:
                raise ItemFailed(f"the echo is misaligned: its log-probabilities are shifted ({what}: "
                                 f"{float(echoed):.3f} echoed, {float(generated):.3f} when generated)")
        for k in range(1, len(names)):
            self._label(context, k)  # every label must come back whole

    def _label(self, context: str, k: int) -> tuple[list[float], str, dict, int]:
        """Label k's token log-probabilities from an echoed prompt + answer, its first token's text and top
        log-probabilities, and the prompt's length in tokens. The label's tokens are the last prompt entries;
        usage.completion_tokens says how many generated entries follow them (none when the server stopped at an
        end-of-generation token)."""
        answer, ids = self._answers[k], self.label_tokens[k]
        reply = self.server.complete(context + answer, echo=True, logprobs=1, max_tokens=1)
        lp = logprobs_of(first_choice(reply))
        end = len(lp["tokens"]) - min(usage_of(reply, "completion_tokens"), len(lp["tokens"]))
        start = end - len(ids)
        if start < 1:
            raise ItemFailed("the echoed prompt is shorter than the label (does the server echo the prompt?)")
        pieces = [t if isinstance(t, str) else "" for t in lp["tokens"][start:end]]
        # servers may write special tokens (the terminator) as empty text
        if "".join(pieces) not in (answer, answer.removesuffix(self.terminator or "")):
            raise ItemFailed(f"the echo is misaligned: its last prompt tokens are {''.join(pieces)!r}, not the "
                             f"label {answer!r}")
        values = [finite_logprob(v, "an echoed label token") for v in lp["token_logprobs"][start:end]]
        tops = lp.get("top_logprobs")
        top = tops[start] if isinstance(tops, list) and len(tops) > start and isinstance(tops[start], dict) else {}
        top = {t: v for t, v in top.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return values, pieces[0], top, usage_of(reply, "prompt_tokens") - len(ids)

    def score(self, context: str) -> Scored:
        per_label, prompt_tokens = [], 0
        for k in range(len(self._answers)):
            values, _, _, prompt_tokens = self._label(context, k)
            per_label.append(values)
        return Scored(token_logprobs=per_label, prompt_tokens=prompt_tokens)


class NextToken(CompletionScoring):
    """``next_token``: one ``max_tokens=1`` request per edge of the labels' token trie, ``logit_bias`` forcing the
    label's next token; the server must report the model's log-probability of it, not the biased one."""

    name = "next_token"

    def prepare(self, names: list[str], lead: str, term: Terminator, context: str) -> None:
        self._piece: dict[int, str] = {}
        label_ids, self._prefix_text = label_prefixes(self.server, names, lead)
        # the forced token must come back with the model's log-probability, not the biased one. Distinct tokens
        # at one position cannot add up to more than probability 1 (each reads ~1 after the bias); and none may
        # beat the best token of an unforced generation there, when one is reported
        forced = {t: self._forced(context, t)[0] for t in sorted({ids[0] for ids in label_ids})}
        total = sum(math.exp(v) for v in forced.values())
        gen = logprobs_of(first_choice(self.server.complete(context, max_tokens=1, logprobs=5)))
        tops = gen.get("top_logprobs")
        top = tops[0] if gen["token_logprobs"] and isinstance(tops, list) and isinstance(tops[0], dict) else {}
        best = max((float(v) for v in top.values() if isinstance(v, (int, float)) and not isinstance(v, bool)),
                   default=None)
        if (len(forced) > 1 and total > 1.05) or (best is not None and max(forced.values()) > best + 0.05):
            raise ItemFailed(f"the server reports log-probabilities after logit_bias (forced tokens: "
                             f"{', '.join(f'{v:.3f}' for v in forced.values())}); use scoring='echo'")
        self.terminator = None
        if term is not None:
            try:
                self._forced(context + lead + names[0], term[1])
                self.terminator = term[0]
                label_ids = [ids + [term[1]] for ids in label_ids]
            except ItemFailed as exc:
                log.info("%s: the terminator %r cannot be scored (%s); labels are scored without it",
                         self.server.model_id, term[0], self.server.redact(str(exc)))
        if self.terminator is None:
            refuse_prefix_labels(names, label_ids)
        needed = self.needed_nodes(label_trie(label_ids))  # p_s="guided": only the steps that branch
        self.edges = sorted({(tuple(ids[:j]), ids[j]) for ids in label_ids for j in range(len(ids))
                             if tuple(ids[:j]) in needed}, key=lambda e: (len(e[0]), e))
        self._piece = {t: self.server.detokenize([t]) for t in {t for _, t in self.edges}}
        self.label_tokens = label_ids

    def _forced(self, prompt_text: str, token: int) -> tuple[float, dict]:
        """The model's log-probability of ``token`` right after ``prompt_text`` (one token generated with it
        forced by logit_bias), and the reply."""
        reply = self.server.complete(prompt_text, max_tokens=1, logprobs=1, logit_bias={str(token): FORCE_BIAS})
        lp = logprobs_of(first_choice(reply))
        if not lp["token_logprobs"]:
            raise ItemFailed("the server reported no log-probability for the forced token")
        got, want = lp["tokens"][0], self._piece.get(token)
        if want and isinstance(got, str) and got.strip() and got.strip() != want.strip():
            raise ItemFailed(f"the server generated {got!r}, not the forced token {want!r} (is logit_bias "
                             "supported?)")
        return finite_logprob(lp["token_logprobs"][0], "the forced token"), reply

    def score(self, context: str) -> Scored:
        got: dict[tuple[tuple[int, ...], int], float] = {}
        prompt_tokens = 0
        for prefix, token in self.edges:
            got[(prefix, token)], reply = self._forced(context + self._prefix_text[prefix], token)
            if not prompt_tokens:
                prompt_tokens = usage_of(reply, "prompt_tokens") - len(prefix)
        return Scored(token_logprobs=walked_logprobs(self.label_tokens, got), prompt_tokens=prompt_tokens)


class TokenIds(CompletionScoring):
    """``token_ids``: vLLM's ``logprob_token_ids``, generations along the labels' token trie that report the
    model's raw log-probability of every label token at each step."""

    name = "token_ids"

    def prepare(self, names: list[str], lead: str, term: Terminator, context: str) -> None:
        label_ids, self._prefix_text = label_prefixes(self.server, names, lead)
        self.terminator = term[0] if term else None
        if term:
            label_ids = [ids + [term[1]] for ids in label_ids]
        else:
            refuse_prefix_labels(names, label_ids)
        self._trie = label_trie(label_ids)
        self._needed = self.needed_nodes(self._trie)
        self.label_tokens = label_ids
        # the server must honour the field (a server that ignores it answers with its own top tokens, so the
        # requested ids are missing) and report the model's log-probabilities: distinct tokens at one position add
        # up to at most 1, and the best requested one is no better than an unforced generation's best token
        self._trie_tokens = sorted({t for ids in label_ids for t in ids})
        first = self._trie[()]
        got = self._read([context], first)[0][0][0][1]
        total = sum(math.exp(v) for v in got.values())
        gen_top, _ = top_at(self.server, context, first[0])
        if total > 1.05 or (gen_top and max(got.values()) > max(gen_top.values()) + 0.05):
            raise ItemFailed(f"logprob_token_ids reports something other than the model's log-probabilities "
                             f"(sum of probabilities {total:.3f})")
        # limiting generation to the labels' tokens must leave the reported log-probabilities as they are
        walked = self._read([context], self._trie_tokens, allowed=True)[0][0][0][1]
        if any(abs(walked[t] - got[t]) > 1e-3 for t in first):
            raise ItemFailed("allowed_token_ids changes the reported log-probabilities on this server")

    def _read(self, prompts: list[str], tokens: list[int], *, steps: int = 1,
              allowed: bool = False) -> tuple[list[list[tuple[int, dict[int, float]]]], dict]:
        """For each prompt, the generated tokens and, at each of them, the model's log-probability of each of
        ``tokens`` as the next token: one request with a list of prompts (vLLM batches them; its prefix cache
        serves their common start). With ``allowed``, generation may only pick among ``tokens`` (vLLM applies
        ``allowed_token_ids`` after it takes the raw log-probabilities, so they are unchanged: the probe checks)."""
        if len(tokens) > MAX_TOKEN_IDS:
            raise ItemFailed(f"{len(tokens)} label tokens at one step; vLLM reads at most {MAX_TOKEN_IDS}")
        fields = {"max_tokens": steps, "logprobs": len(tokens), "logprob_token_ids": tokens,
                  "return_tokens_as_token_ids": True, "ignore_eos": True}
        if allowed:
            fields["allowed_token_ids"] = tokens
        reply = self.server.complete(prompts if len(prompts) > 1 else prompts[0], **fields)
        choices = reply.get("choices")
        if not isinstance(choices, list) or len(choices) != len(prompts):
            raise ItemFailed(f"the reply has {len(choices) if isinstance(choices, list) else 'no'} choices for "
                             f"{len(prompts)} prompts")
        out: list = [None] * len(prompts)
        for pos, choice in enumerate(choices):
            index = choice.get("index", pos) if isinstance(choice, dict) else pos
            if not isinstance(index, int) or not 0 <= index < len(prompts) or out[index] is not None:
                raise ItemFailed("the reply's choices do not match its prompts one to one")
            lp = logprobs_of(choice)
            tops = lp.get("top_logprobs")
            if not lp["tokens"] or not isinstance(tops, list) or len(tops) != len(lp["tokens"]):
                raise ItemFailed("the reply carries no log-probabilities of the requested tokens")
            row = []
            for key, top in zip(lp["tokens"], tops):
                m = TOKEN_KEY.match(key) if isinstance(key, str) else None
                top = top if isinstance(top, dict) else {}
                found = {int(g.group(1)): v for k, v in top.items() if isinstance(k, str) and (g := TOKEN_KEY.match(k))}
                if m is None or any(t not in found for t in tokens):
                    raise ItemFailed(f"the reply lacks log-probabilities of the requested tokens (got "
                                     f"{snippet(json.dumps(top), 120)}); does the server support "
                                     "logprob_token_ids?")
                row.append((int(m.group(1)), {t: finite_logprob(found[t], "a label token") for t in tokens}))
            out[index] = row
        return out, reply

    def score(self, context: str) -> Scored:
        """Walks down the labels' token trie: each request generates from one or more nodes with every step
        limited to the labels' tokens, reading the children of each node it passes. The first starts at the
        root (so it follows the guided-decoding path); each later one, a list of prompts, starts at every node
        not read yet whose parent was, so a label's chain of tokens is read in one walk (two requests for
        most label sets, each served by the prefix cache)."""
        needed = self._needed
        got: dict[tuple[tuple[int, ...], int], float] = {}
        done: set[tuple[int, ...]] = set()
        starts: list[tuple[int, ...]] = [()]
        prompt_tokens = 0
        while starts:
            rows, reply = self._read([context + self._prefix_text[p] for p in starts], self._trie_tokens,
                                     steps=walk_steps(needed, starts), allowed=True)
            if not done:
                prompt_tokens = usage_of(reply, "prompt_tokens")
            for node, row in zip(starts, rows):
                read_walk(self._trie, node, row, done, got)
            starts = unread_nodes(self._trie, done, needed)
        return Scored(token_logprobs=walked_logprobs(self.label_tokens, got), prompt_tokens=prompt_tokens)


SCORINGS: dict[str, type[CompletionScoring]] = {s.name: s for s in (TokenIds, Echo, NextToken)}
