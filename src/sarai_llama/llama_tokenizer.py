"""``LlamaTokenizer``: a model's tokenizer as an object (llama-cpp-python's name and methods)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from .vocab import Vocab

__all__ = ["BaseLlamaTokenizer", "LlamaTokenizer"]


class BaseLlamaTokenizer(ABC):
    """What a tokenizer offers: bytes <-> token ids."""

    @abstractmethod
    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of UTF-8 ``text``; ``add_bos`` adds the model's BOS token if it uses
        one, ``special`` parses special-token text (``<start_of_turn>``) as those tokens."""

    @abstractmethod
    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        """UTF-8 bytes of ``tokens`` (``prev_tokens``: the context before them, unused by
        llama.cpp vocabularies)."""


class _TextTokens(Protocol):
    def tokenize(self, text: bytes, add_bos: bool = ..., special: bool = ...) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = ...,
                   special: bool = ...) -> bytes: ...


class LlamaTokenizer(BaseLlamaTokenizer):
    """The tokenizer of a :class:`~sarai_llama.Llama` (``Llama.tokenizer()``), or of
    anything with its ``tokenize``/``detokenize`` (a :class:`~sarai_llama.vocab.Vocab`)."""

    def __init__(self, llama: _TextTokens) -> None:
        self._llama = llama

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        return self._llama.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        return self._llama.detokenize(tokens, prev_tokens=prev_tokens, special=special)

    def encode(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of a ``str``."""
        return self.tokenize(text.encode("utf-8", errors="ignore"), add_bos=add_bos, special=special)

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``; bytes that are not complete UTF-8 are dropped."""
        return self.detokenize(tokens).decode("utf-8", errors="ignore")

    @classmethod
    def from_ggml_file(cls, path: str | os.PathLike[str]) -> LlamaTokenizer:
        """The tokenizer of a GGUF file, loading only its vocabulary."""
        from .loading import load_model

        return cls(Vocab(load_model(path, vocab_only=True)))
