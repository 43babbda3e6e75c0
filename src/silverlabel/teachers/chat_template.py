"""Chat templates rendered here, for servers that do not expose theirs (llama-cpp-python's): a shipped model's,
a .gguf file's, a tokenizer_config.json's, or a Jinja string, in the sandboxed environment llama-cpp-python uses."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import SilverlabelError

SENTINEL = "SILVERLABEL-ITEM-TEXT-5d1c9"  # printable: it must survive a server's tokenize/detokenize round trip
# what an end-of-turn token looks like written out in a chat template: <|im_end|>, <|eot_id|>, </s>, <end_of_turn>
SPECIAL_TOKEN = re.compile(r"<\|[^<>|\s]{1,40}\|>|<[^<>\s]{1,40}>|\[/?[A-Za-z_]{2,20}\]")


def load_chat_template(source: str) -> tuple[Callable[..., str], str]:
    """A local chat template for servers that do not expose theirs: a shipped model name or .gguf file (read
    with llama-cpp-python, vocabulary only), a tokenizer_config.json, or a Jinja template string. Returns the
    renderer and the EOS text (the raw prompt's terminator)."""
    bos = eos = ""
    if "{%" in source or "{{" in source:
        template = source
    else:
        from ..assets import GGUF_ASSETS, gguf_path

        path = gguf_path(source) if source in GGUF_ASSETS else Path(source).expanduser()
        if not path.is_file():
            raise SilverlabelError(f"chat_template '{source}' is neither a file, a shipped model "
                                   f"({', '.join(GGUF_ASSETS)}) nor a Jinja template")
        if path.suffix.lower() == ".gguf":
            try:
                import llama_cpp
            except ImportError:
                raise SilverlabelError("reading a chat template from a .gguf file needs llama-cpp-python: pip "
                                       "install 'silverlabel[llamacpp]' (or pass tokenizer_config.json)") from None
            llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
            try:
                template = llm.metadata.get("tokenizer.chat_template", "")
                vocab = llm._model
                bos = vocab.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
                eos = vocab.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
            finally:
                llm.close()
        elif path.suffix.lower() == ".json":
            config = json.loads(path.read_text(encoding="utf-8"))
            template = config.get("chat_template") or ""

            def text_of(tok):
                return tok.get("content", "") if isinstance(tok, dict) else (tok or "")

            bos, eos = text_of(config.get("bos_token")), text_of(config.get("eos_token"))
        else:
            template = path.read_text(encoding="utf-8")
        if not isinstance(template, str) or not template.strip():
            raise SilverlabelError(f"{path} carries no chat template; use the raw prompt (chat=False)")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise SilverlabelError(f"the chat template refused the prompt: {message}")

    # the same environment llama-cpp-python's and the llamacpp teacher's renderers use
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    compiled = env.from_string(template)

    def render(messages: list[dict], generation: bool, **kwargs) -> str:
        return compiled.render(messages=messages, add_generation_prompt=generation, bos_token=bos, eos_token=eos,
                               raise_exception=raise_exception, **kwargs)

    return render, eos
