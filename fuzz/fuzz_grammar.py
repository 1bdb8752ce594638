"""Fuzz the GBNF parser (``LlamaGrammar.from_string``) and, for grammars that parse,
the grammar matcher during a short greedy generation on the tiny model.

A grammar that does not parse must raise ``ValueError`` at construction; one
that parses may still match nothing (``RuntimeError`` from the sampler) or be
refused by the model's vocabulary (``ValueError``); nothing may crash.
"""

from __future__ import annotations

import _common

import atheris

with atheris.instrument_imports(include=["sarai_llama"]):  # our code only: fast start
    from sarai_llama import Llama, LlamaGrammar, _core

_core.set_log_level(5)
LLM = Llama(str(_common.tiny_model()), n_ctx=64, n_batch=16, n_threads=1, verbose=False)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    generate = fdp.ConsumeBool()
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    try:
        grammar = LlamaGrammar.from_string(text)
    except ValueError:
        return
    if not generate:
        return
    try:
        LLM("the", grammar=grammar, max_tokens=4, temperature=0.0)
    except (ValueError, RuntimeError):
        pass


if __name__ == "__main__":
    _common.run(TestOneInput)
