"""``text_completion`` answers of ``Llama.create_completion`` from a request's pieces."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from . import responses
from .engine import Collected, Piece

__all__ = ["chunks", "collect"]


def collect(pieces: Iterable[Piece], head: str, cid: str, created: int, model: str, with_logprobs: bool,
            n_prompt: int) -> dict[str, Any]:
    """One non-streamed ``text_completion``; ``head`` (the echoed prompt) comes first."""
    got = Collected.of(pieces, with_logprobs)
    return responses.completion(cid, created, model, head + got.text, got.finish_reason, got.logprobs,  # type: ignore[arg-type]
                                got.usage or responses.usage(n_prompt, 0))


def chunks(pieces: Iterator[Piece], head: str, cid: str, created: int, model: str) -> Iterator[dict[str, Any]]:
    """``text_completion`` chunks: ``head`` (the echoed prompt) if any, then each piece with text,
    logprobs or the finish reason."""
    if head:
        yield responses.completion_chunk(cid, created, model, head, None, None)
    for p in pieces:
        if p.text or p.logprobs or p.finish_reason is not None:
            yield responses.completion_chunk(cid, created, model, p.text, p.finish_reason, p.logprobs)
