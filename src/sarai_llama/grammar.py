"""``LlamaGrammar``: a GBNF grammar for constrained sampling (llama-cpp-python's shape)."""

from __future__ import annotations

import os
from pathlib import Path

from . import _core
from .errors import utf8

__all__ = ["LlamaGrammar"]


class LlamaGrammar:
    """GBNF text and its start rule, parsed by llama.cpp's parser when constructed:
    a grammar that does not parse raises ``ValueError`` here, with the parser's message."""

    def __init__(self, grammar: str, root: str = "root") -> None:
        if not isinstance(grammar, str) or not grammar.strip():
            raise ValueError("grammar must be a non-empty GBNF string")
        utf8(grammar, "grammar")
        _core.check_grammar(grammar, root)
        self.grammar = grammar
        self.root = root

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> LlamaGrammar:
        return cls(grammar)

    @classmethod
    def from_file(cls, file: str | os.PathLike[str], verbose: bool = True) -> LlamaGrammar:
        return cls(Path(file).read_text())

    @classmethod
    def from_json_schema(cls, json_schema: str, verbose: bool = True) -> LlamaGrammar:
        """The grammar of JSON valid against ``json_schema`` (JSON text), by llama.cpp's
        converter; ``ValueError`` names the problem in an invalid schema."""
        from .chat_template import json_schema_grammar

        return cls(json_schema_grammar(json_schema))
