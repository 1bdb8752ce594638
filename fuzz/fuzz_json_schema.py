"""Fuzz the JSON-schema to GBNF converter (``LlamaGrammar.from_json_schema``): a schema it
cannot convert must raise ``ValueError``; a grammar it returns must parse (checked by
``LlamaGrammar`` itself when constructed)."""

from __future__ import annotations

import _common

import atheris

with atheris.instrument_imports(include=["sarai_llama"]):  # our code only: fast start
    from sarai_llama import LlamaGrammar

if not hasattr(LlamaGrammar, "from_json_schema"):
    _common.not_available("LlamaGrammar.from_json_schema")


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    try:
        LlamaGrammar.from_json_schema(fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes()))
    except ValueError:
        pass


if __name__ == "__main__":
    _common.run(TestOneInput)
