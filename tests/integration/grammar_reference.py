"""Independent references for the guided-decoding label: what llama.cpp itself generates, greedily, under a GBNF
grammar that allows only the label strings. Written here from llama-cpp-python's own API, sharing no code with
silverlabel's guided choice."""

from __future__ import annotations

from collections.abc import Sequence


def label_grammar(choices: Sequence[str]) -> str:
    """A GBNF grammar that matches exactly one of ``choices`` (plain labels: only quotes and backslashes escaped)."""
    quoted = ['"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in choices]
    return "root ::= " + " | ".join(quoted)


def generate_label(llm, prompt_tokens: list[int], choices: Sequence[str]) -> tuple[str, list[int]]:
    """Greedy (temperature 0) generation under the label grammar until an end-of-generation token: the text and
    the ids of the tokens chosen."""
    import llama_cpp

    grammar = llama_cpp.LlamaGrammar.from_string(label_grammar(choices), verbose=False)
    ids: list[int] = []
    for token in llm.generate(prompt_tokens, temp=0.0, grammar=grammar, reset=True):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            break
        ids.append(token)
        if len(ids) > max(len(c.encode()) for c in choices) + 4:
            raise AssertionError(f"no end of generation after {len(ids)} tokens under the label grammar")
    return llm.detokenize(ids).decode("utf-8", errors="replace"), ids


def canonical_ids(llm, text: str) -> list[int]:
    """The ids of ``text``'s own tokenisation: the path silverlabel scores for a label."""
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
