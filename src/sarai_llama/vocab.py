"""A model's vocabulary: text <-> tokens as ``Llama`` and ``LlamaTokenizer`` both expose it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import utf8

__all__ = ["Vocab"]


class Vocab:
    """Tokenize and detokenize with llama-cpp-python's conventions, over a ``_core.Model``
    (a full model or one loaded with ``vocab_only``)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def n_vocab(self) -> int:
        """Tokens in the vocabulary."""
        return int(self.model.n_vocab)

    def token_bos(self) -> int:
        """The beginning-of-sequence token's id (-1: none)."""
        return int(self.model.token_bos)

    def token_eos(self) -> int:
        """The end-of-sequence token's id (-1: none)."""
        return int(self.model.token_eos)

    def token_nl(self) -> int:
        """The newline token's id (-1: none)."""
        return int(self.model.token_nl)

    def tokenize(self, text: bytes | str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Tokens of ``text`` (UTF-8 bytes; a ``str`` is encoded, a lone surrogate is a
        ``ValueError``); ``add_bos`` adds the model's BOS if it uses one."""
        if isinstance(text, str):
            text = utf8(text, "text")
        return list(self.model.tokenize(text, add_bos, special))

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        """UTF-8 bytes of ``tokens`` (may end mid-character; ``prev_tokens`` is unused by
        llama.cpp vocabularies). As llama-cpp-python, the space a SentencePiece vocabulary
        puts before the first word after BOS is dropped, so ``detokenize(tokenize(b"Hello"))``
        is ``b"Hello"``."""
        tokens = [int(t) for t in tokens]
        out = bytes(self.model.detokenize(tokens, special))
        if tokens and tokens[0] == self.model.token_bos and out.startswith(b" "):
            out = out[1:]
        return out

    def prompt_tokens(self, prompt: str | bytes | Sequence[int], n_ctx: int) -> list[int]:
        """A completion prompt's tokens (text gets BOS if the model uses one, and special-token
        text is parsed); an empty prompt or one that leaves no room in ``n_ctx`` is a ``ValueError``."""
        if isinstance(prompt, (str, bytes)):
            text = utf8(prompt, "prompt") if isinstance(prompt, str) else prompt
            bos = self.model.add_bos
            tokens = self.tokenize(text, add_bos=bos, special=True) if text else ([self.model.token_bos] if bos else [])
        else:
            tokens = [int(t) for t in prompt]
        if not tokens:
            raise ValueError("the prompt is empty and the model adds no BOS token")
        if len(tokens) >= n_ctx:
            raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {n_ctx}: "
                             "shorten the prompt or create the Llama with a larger n_ctx")
        return tokens

    def prompt_text(self, prompt: str | bytes | Sequence[int], tokens: list[int]) -> str:
        """The prompt as text: as given (what ``echo`` returns, as llama-cpp-python), or its tokens' text."""
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, bytes):
            return prompt.decode("utf-8", errors="ignore")
        return self.detokenize(tokens).decode("utf-8", errors="ignore")
