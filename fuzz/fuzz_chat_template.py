"""Fuzz the chat-template renderer (``ChatTemplate(source, bos, eos).render``) with fuzzed
templates and messages. A template that cannot render must raise ``ValueError``."""

from __future__ import annotations

import _common

import atheris

with atheris.instrument_imports(include=["sarai_llama"]):  # our code only: fast start
    try:
        from sarai_llama.chat_template import ChatTemplate
    except ImportError as exc:
        _common.not_available(f"sarai_llama.chat_template ({exc})")

ROLES = ["system", "user", "assistant", "tool", "", "x"]


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    messages: list[dict[str, object]] = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        msg: dict[str, object] = {"role": ROLES[fdp.ConsumeIntInRange(0, len(ROLES) - 1)],
                                  "content": fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64))}
        if fdp.ConsumeIntInRange(0, 7) == 0:
            msg["tool_calls"] = [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]
        messages.append(msg)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}] \
        if fdp.ConsumeBool() else None
    add_generation_prompt = fdp.ConsumeBool()
    source = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    try:
        ChatTemplate(source, "<s>", "</s>").render(messages, tools=tools, add_generation_prompt=add_generation_prompt)
    except ValueError:
        pass


if __name__ == "__main__":
    _common.run(TestOneInput)
