"""The paper's few-shot prompt, its demonstrations, and the split into a shared prefix and a per-item part.

Everything before ``{text}`` is identical for every item, so a backend can evaluate it once and reuse it;
:meth:`Prompt.render_parts` returns that prefix and the item part separately (whitespace before the text moves
into the item part so the text is tokenised as it would be in the full prompt).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from ..errors import SilverlabelError

PAPER_TEMPLATE = """### Instruction ###
{task}
Respond with only the label name, nothing else.
### Available Labels ###
{labels}
### Examples ###
{demonstrations}
### Input ###
Text to classify: {text}
### Output ###
Label:"""

DEMO_TEMPLATE = "Text: {text}\nLabel: {label}"
MAX_DEMO_CHARS = 600  # a long demonstration costs every item its tokens; truncate it (prompt size, not quality)


@dataclass(frozen=True)
class Demonstrations:
    """k labelled examples fixed for a run, identified by the seed that drew them."""

    seed: int
    examples: tuple[tuple[str, str], ...]  # (text, label name)

    def key(self) -> str:
        return hashlib.sha256(json.dumps([self.seed, self.examples]).encode()).hexdigest()[:16]

    def shows(self, texts) -> np.ndarray:
        """For each text, whether it is one of the demonstrations (compared as the prompt shows them)."""
        shown = {t for t, _ in self.examples}
        return np.array([_clip(str(t)) in shown for t in texts], dtype=bool)


def sample_demonstrations(texts, labels, label_names, *, k: int = 3, seed: int = 0,
                          balanced: bool = False) -> Demonstrations:
    """Draw k demonstrations from the training split (random as in the paper, or one class after another)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    if k < 0:
        raise SilverlabelError(f"k (number of demonstrations) must be 0 or more, got {k}")
    if k > len(labels):
        raise SilverlabelError(f"k={k} demonstrations but only {len(labels)} training items")
    if balanced:
        order = []
        pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
        classes = list(rng.permutation(sorted(pools)))
        while len(order) < k:
            for c in classes:
                if pools[c] and len(order) < k:
                    order.append(pools[c].pop())
    else:
        order = rng.choice(len(labels), size=k, replace=False).tolist()
    examples = tuple((_clip(str(texts[i])), label_names[int(labels[i])]) for i in order)
    return Demonstrations(seed=seed, examples=examples)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DEMO_CHARS else text[: MAX_DEMO_CHARS - 3] + "..."


def validate_label_names(label_names) -> list[str]:
    names = [str(n) for n in label_names]
    if len(names) < 2:
        raise SilverlabelError(f"a teacher needs at least 2 labels, got {names}")
    for n in names:
        if not n.strip():
            raise SilverlabelError(f"label names must not be empty: {names}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SilverlabelError(f"label name '{dup[0]}' appears twice in {names}; label names must be unique")
    return names


@dataclass(frozen=True)
class Prompt:
    """A filled-in template minus the item text: task, labels and demonstrations are fixed."""

    task: str
    label_names: tuple[str, ...]
    demonstrations: Demonstrations
    template: str = PAPER_TEMPLATE
    label_separator: str = "\n"

    def __post_init__(self) -> None:
        validate_label_names(self.label_names)
        if self.template.count("{text}") != 1:
            raise SilverlabelError("the prompt template must contain '{text}' exactly once")
        if self.template.index("{text}") < max(self.template.find("{demonstrations}"), self.template.find("{labels}")):
            raise SilverlabelError("the prompt template must put '{text}' after '{labels}' and '{demonstrations}'")

    def render(self, text: str) -> str:
        demos = "\n".join(DEMO_TEMPLATE.format(text=t, label=lab) for t, lab in self.demonstrations.examples)
        try:
            return self.template.format(task=self.task, labels=self.label_separator.join(self.label_names),
                                        demonstrations=demos, text=text)
        except (KeyError, IndexError) as exc:
            raise SilverlabelError(f"the prompt template has an unknown field {exc}; allowed: task, labels, "
                                   "demonstrations, text (write literal braces as {{ }})") from None

    def messages(self, text: str, layout: str = "turns") -> list[dict]:
        """The prompt as chat messages for an API that takes only messages. ``turns``: the instruction and labels
        as the system message, each demonstration as a user turn and the assistant's answer, then the item (how
        chat models are prompted with examples). ``single``: the whole prompt as one user message, exactly what
        the local teachers put in their chat template (so the two can be compared on the same weights). A custom
        template cannot be split into turns, so it always goes as one user message."""
        if layout == "single" or self.template != PAPER_TEMPLATE:
            return [{"role": "user", "content": self.render(text)}]
        system = (f"### Instruction ###\n{self.task}\nRespond with only the label name, nothing else.\n"
                  f"### Available Labels ###\n{self.label_separator.join(self.label_names)}")
        out = [{"role": "system", "content": system}]
        for demo, label in self.demonstrations.examples:
            out += [{"role": "user", "content": f"Text to classify: {demo}"}, {"role": "assistant", "content": label}]
        return out + [{"role": "user", "content": f"Text to classify: {text}"}]

    def key(self) -> str:
        """Identifies everything that changes the teacher's answer except the model and the item."""
        blob = json.dumps([self.template, self.task, list(self.label_names), self.label_separator,
                           self.demonstrations.key()])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def split_at_text(rendered: str, sentinel: str) -> tuple[str, str]:
    """Split a rendered prompt at the item's text; whitespace before the text goes with the item part."""
    prefix, _, suffix = rendered.partition(sentinel)
    stripped = prefix.rstrip(" ")
    return stripped, prefix[len(stripped):] + "{text}" + suffix
