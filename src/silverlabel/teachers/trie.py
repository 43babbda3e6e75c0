"""The label trie and the maths on it, shared by every backend that scores labels token by token.

A label set is a trie of token ids; a backend reads the log-probabilities of each node's children (all of them for
the sequence probability, only the branching ones for ``p_s = "guided"``) and these functions turn what it read
into P_S and the label guided decoding would return. Pure functions over lists: no backend state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import logsumexp


def distribution(token_logprobs: Sequence[Sequence[float]]) -> np.ndarray:
    """P_S over labels: each label's sequence probability, renormalised over the label set."""
    seq = np.array([sum(lp) for lp in token_logprobs], dtype=np.float64)
    seq -= seq.max()
    p = np.exp(seq)
    return p / p.sum()


def guided_steps(label_tokens: Sequence[Sequence[int]],
                 token_logprobs: Sequence[Sequence[float]]) -> list[list[float]]:
    """Each label's token log-probabilities renormalised over the tokens the label set allows at that step (its
    trie node's children): the distribution guided decoding samples a label from (``p_s = "guided"``). A step
    with a single allowed token contributes 0 whatever its raw value, so backends need not read those."""
    lp_of = {(tuple(ids[:j]), ids[j]): lps[j]
             for ids, lps in zip(label_tokens, token_logprobs) for j in range(len(ids))}
    norm = {node: float(logsumexp([lp_of[(node, t)] for t in kids]))
            for node, kids in label_trie(label_tokens).items()}
    return [[float(lps[j]) - norm[tuple(ids[:j])] for j in range(len(ids))]
            for ids, lps in zip(label_tokens, token_logprobs)]


def guided_choice(label_tokens: Sequence[Sequence[int]], token_logprobs: Sequence[Sequence[float]]) -> int:
    """The label greedy decoding constrained to the label set returns: at each step keep only the labels that
    start with the most likely allowed token. Hand-written because it must reuse the scores we already have;
    a guided-decoding library would re-run the model."""
    candidates = list(range(len(label_tokens)))
    pos = 0
    while len(candidates) > 1:
        best = max(candidates, key=lambda c: (token_logprobs[c][pos], -c))
        token = label_tokens[best][pos]
        candidates = [c for c in candidates if label_tokens[c][pos] == token]
        pos += 1
    return candidates[0]


def label_trie(label_tokens: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    """Each proper prefix of the labels' token sequences -> the tokens that follow it, shallowest prefix first:
    the nodes whose next-token log-probabilities make up every label's score."""
    children: dict[tuple[int, ...], set[int]] = {}
    for ids in label_tokens:
        for j in range(len(ids)):
            children.setdefault(tuple(ids[:j]), set()).add(ids[j])
    return {k: sorted(children[k]) for k in sorted(children, key=lambda k: (len(k), k))}


def read_walk(trie: dict[tuple[int, ...], list[int]], node: tuple[int, ...], steps, done: set, got: dict) -> None:
    """Record what one generation down the trie from ``node`` read: ``steps`` are its (generated token, {token:
    log-probability}) pairs; at every trie node it passes that is not read yet, the log-probabilities of the
    node's children go to ``got[(node, token)]``. Used by the backends that score labels by generating along the
    trie (vLLM's ``logprob_token_ids``, in process and on a server)."""
    for token, values in steps:
        if node not in trie or node in done:
            break
        got.update({(node, t): values[t] for t in trie[node]})
        done.add(node)
        node += (token,)


def unread_nodes(trie: dict[tuple[int, ...], list[int]], done: set,
                 needed: set | None = None) -> list[tuple[int, ...]]:
    """The nodes a next walk starts from: needed (default: every node), not read yet, and with no such node
    above them (a walk from there reads those below it on its path)."""
    needed = set(trie) if needed is None else needed
    todo = [p for p in trie if p in needed and p not in done]
    return [p for p in todo if not any(p[:j] in needed and p[:j] not in done for j in range(len(p)))]


def walk_steps(needed: set, starts: Sequence[tuple[int, ...]]) -> int:
    """Generation steps for walks from ``starts`` to pass the deepest needed node (at least one)."""
    return max(1, max((len(n) for n in needed), default=0) + 1 - min(len(p) for p in starts))


def walked_logprobs(label_tokens: Sequence[Sequence[int]], got: dict) -> list[list[float]]:
    """Each label's token log-probabilities from the trie edges a walk read (``got[(node, token)]``). An edge
    left unread is a single allowed token under ``p_s="guided"`` (:meth:`Teacher.needed_nodes`), where its value
    does not count, so it reads as 0."""
    return [[got.get((tuple(ids[:j]), ids[j]), 0.0) for j in range(len(ids))] for ids in label_tokens]
