"""The paper's prompt at token level, shared by the in-process teachers (llamacpp, hf and vllm).

Each of them needs the same five things from a prompt and a tokenizer: the prompt rendered (inside the model's chat
template unless raw) and split at the item's text; the shared prefix as tokens; the item's lead and ending, with
the ending's plain text tokenised together with the item (so BPE merges across the boundary, ".\\n", come out as
in the full prompt) and only its special-token tail parsed for special tokens, never the user's text; the token
that ends an answer; and each label's tokens. How a tokenizer does each step differs (llama.cpp's vocabulary or a
transformers tokenizer), so a backend passes a small :class:`Vocabulary` and gets a :class:`TokenPrompt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import SilverlabelError
from .prompts import Prompt, split_at_text

SENTINEL = "\x00TEXT\x00"  # where the item's text goes while the template renders (never in a user's text)


class Vocabulary(Protocol):
    """What a backend's tokenizer offers the token-level prompt."""

    def tokens(self, text: str, *, special: bool) -> list[int]: ...

    def prefix_tokens(self, prefix: str) -> list[int]:
        """The prompt's shared start as tokens, with BOS where the model expects one and the text has none."""
        ...

    def is_special(self, token: int) -> bool: ...

    def decode(self, ids: list[int]) -> str: ...

    def apply_chat(self, messages: list[dict], generation: bool) -> str: ...

    def eos(self) -> int: ...


def render(vocab: Vocabulary, prompt: Prompt, *, chat: bool) -> tuple[str, str]:
    """The prompt as the model sees it (inside its chat template unless raw), split at the item's text."""
    body = prompt.render(SENTINEL)
    if not chat:
        return split_at_text(body, SENTINEL)
    return split_at_text(vocab.apply_chat([{"role": "user", "content": body}], True), SENTINEL)


def terminator(vocab: Vocabulary, *, chat: bool) -> int:
    """The token that ends an answer: what the chat template writes right after an assistant turn (GGUF metadata
    mislabels end-of-turn for some models, e.g. SmolLM2), else end-of-sequence (always, for the raw prompt)."""
    if chat:
        done = vocab.apply_chat([{"role": "user", "content": "x"}, {"role": "assistant", "content": SENTINEL}], False)
        after = done.partition(SENTINEL)[2]
        toks = vocab.tokens(after, special=True) if after else []
        if toks and vocab.is_special(toks[0]):
            return toks[0]
    return vocab.eos()


@dataclass
class TokenPrompt:
    """A prepared prompt: ``prefix_tokens + item_tokens(text)`` is the full prompt for one item, and each of
    ``label_tokens`` (the label, then ``terminator``) is scored as its continuation."""

    vocab: Vocabulary
    prefix_tokens: list[int]
    item_lead: str
    suffix_head: str  # the ending's plain text, tokenised with the item
    suffix_tokens: list[int]  # the ending's special-token tail
    terminator: int
    label_tokens: list[list[int]]

    @classmethod
    def build(cls, vocab: Vocabulary, prompt: Prompt, *, chat: bool) -> TokenPrompt:
        prefix, item_part = render(vocab, prompt, chat=chat)
        lead, _, suffix = item_part.partition("{text}")
        suffix_tokens = vocab.tokens(suffix, special=True)
        first = next((i for i, t in enumerate(suffix_tokens) if vocab.is_special(t)), len(suffix_tokens))
        head = vocab.decode(suffix_tokens[:first])
        if not suffix.startswith(head):  # the plain part does not round-trip: tokenise the whole ending apart
            head, first = "", 0
        end = terminator(vocab, chat=chat)
        answer_lead = "" if chat else " "  # the raw prompt ends "Label:", so the answer starts with a space
        labels = [vocab.tokens(answer_lead + n, special=False) + [end] for n in prompt.label_names]
        if any(len(t) < 2 for t in labels):
            raise SilverlabelError(f"a label tokenises to nothing: {list(prompt.label_names)}")
        return cls(vocab, vocab.prefix_tokens(prefix), lead, head, suffix_tokens[first:], end, labels)

    def item_tokens(self, text: str) -> list[int]:
        return self.vocab.tokens(self.item_lead + text + self.suffix_head, special=False) + self.suffix_tokens

    def fit(self, text: str, room: int) -> tuple[list[int], bool]:
        """The item's tokens within ``room`` tokens, and whether its text was cut: the prompt's ending is kept
        and the text's beginning (the cut is counted in the summary as truncated)."""
        toks = self.item_tokens(text)
        if len(toks) <= room:
            return toks, False
        tail = self.vocab.tokens(self.suffix_head, special=False) + self.suffix_tokens
        if room - len(tail) < 1:
            raise SilverlabelError(f"the prompt leaves no room for an item's text (room for {room} tokens, its "
                                   f"ending alone takes {len(tail)}); use fewer or shorter demonstrations")
        return self.vocab.tokens(self.item_lead + text, special=False)[: room - len(tail)] + tail, True
