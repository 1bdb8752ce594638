"""Fuzz what may carry bytes that are not UTF-8, on byte-fallback vocabularies: no UnicodeError ever.

Tiny models whose vocabulary is byte fallback only (every piece of text spelled in
``<0xNN>`` tokens) carry real chat templates (Qwen 2.5, Llama 3.1, Mistral Nemo) and
one template with bytes that no UTF-8 text has. Fuzzed: message text and stop strings
(lone surrogates included), tool choices, GBNF text, raw bytes for the tokenizer. Any
call may refuse its input with ``ValueError``, but never with a ``UnicodeError`` (which
is a ``ValueError`` too, so the other harnesses would not notice), and what comes back
is text that encodes as UTF-8.
"""

from __future__ import annotations

import _common

import atheris

with atheris.instrument_imports(include=["sarai_llama"]):  # our code only: fast start
    from sarai_llama import Llama, LlamaGrammar, _core

_core.set_log_level(5)
TEMPLATES = _common.ROOT / "vendor" / "llama.cpp" / "models" / "templates"
FAMILIES = ["Qwen-Qwen2.5-7B-Instruct.jinja", "meta-llama-Llama-3.1-8B-Instruct.jinja",
            "mistralai-Mistral-Nemo-Instruct-2407.jinja"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"]}}}]
CHOICES = ["auto", "none", "required", {"type": "function", "function": {"name": "get_weather"}}]


def _models() -> list[Llama]:
    from random_gguf import write_tiny_llama

    work = _common.workdir()
    paths = [write_tiny_llama(work / f"bytes-{i}.gguf", byte_only=True, n_ctx_train=2048,
                              chat_template=(TEMPLATES / name).read_text()) for i, name in enumerate(FAMILIES)]
    odd = write_tiny_llama(work / "odd.gguf", byte_only=True, chat_template="{% for m in messages %}<\x01\x02>"
                           "{{ m.content }}{% endfor %}")
    odd.write_bytes(odd.read_bytes().replace(b"<\x01\x02>", b"<\xff\xc3>", 1))
    return [Llama(str(p), n_ctx=2048, verbose=False, trusted=True) for p in [*paths, odd]]


MODELS = _models()


def _text(value: object) -> None:
    if isinstance(value, str):
        value.encode("utf-8")  # raises on a lone surrogate: text the caller could not use
    elif isinstance(value, dict):
        for v in value.values():
            _text(v)
    elif isinstance(value, list):
        for v in value:
            _text(v)


def _call(fn, *args, **kw):  # noqa: ANN001, ANN202
    try:
        out = fn(*args, **kw)
    except UnicodeError:
        raise
    except ValueError:
        return None
    _text(out)
    return out


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    llm = MODELS[fdp.ConsumeIntInRange(0, len(MODELS) - 1)]
    choice = CHOICES[fdp.ConsumeIntInRange(0, len(CHOICES) - 1)]
    seed = fdp.ConsumeIntInRange(0, 7)
    max_tokens = fdp.ConsumeIntInRange(1, 6)
    special = fdp.ConsumeBool()
    stops = [fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 4)) for _ in range(fdp.ConsumeIntInRange(0, 2))]
    grammar = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 48))
    content = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 32))
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())

    tokens = llm.tokenize(raw, add_bos=False, special=special)
    llm.detokenize(tokens)
    _call(llm.tokenize, content, add_bos=False)
    _call(llm.create_chat_completion, [{"role": "user", "content": content}], tools=TOOLS, tool_choice=choice,
          stop=stops or None, max_tokens=max_tokens, temperature=1.0, seed=seed)
    parsed = _call(LlamaGrammar.from_string, grammar, verbose=False)
    if parsed is not None:
        _call(llm.create_completion, raw.decode("utf-8", "replace") or "x", grammar=parsed, stop=stops or None,
              max_tokens=max_tokens, temperature=1.0, seed=seed)
    streamed = _call(lambda: list(llm.create_completion(content or "x", stop=stops or None, max_tokens=max_tokens,
                                                        temperature=1.0, seed=seed, stream=True)))
    if streamed is not None:
        _text(streamed)


if __name__ == "__main__":
    _common.run(TestOneInput)
