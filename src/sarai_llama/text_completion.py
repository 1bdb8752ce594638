"""``text_completion`` answers from a request's pieces: ``Llama.create_completion``'s and the server's."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from . import responses
from .engine import Collected, Piece, Request

__all__ = ["CompletionChunks", "answer", "chunks", "collect", "collect_all"]


def collect(pieces: Iterable[Piece], head: str, cid: str, created: int, model: str, with_logprobs: bool,
            n_prompt: int) -> dict[str, Any]:
    """One non-streamed ``text_completion``; ``head`` (the echoed prompt) comes first."""
    got = Collected.of(pieces, with_logprobs, n_prompt)
    return responses.completion(cid, created, model, head + got.text, got.finish_reason,  # type: ignore[arg-type]
                                got.logprobs, responses.usage(got.n_prompt, got.n_generated))


def collect_all(requests: Sequence[Request], pieces: Sequence[list[Piece]], model: str,
                with_logprobs: bool) -> list[dict[str, Any]]:
    """One ``text_completion`` per request, from its pieces (``Llama.create_completions``)."""
    created = responses.now()
    return [collect(got, "", responses.completion_id(), created, model, with_logprobs, len(req.prompt))
            for req, got in zip(requests, pieces)]


def answer(pieces: Iterator[Piece], head: str, model: str, stream: bool, with_logprobs: bool,
           n_prompt: int) -> dict[str, Any] | Iterator[dict[str, Any]]:
    """``Llama.create_completion``'s answer under a new id: its chunks when ``stream``
    (:func:`chunks`), else one ``text_completion`` (:func:`collect`)."""
    cid, created = responses.completion_id(), responses.now()
    if stream:
        return chunks(pieces, head, cid, created, model)
    return collect(pieces, head, cid, created, model, with_logprobs, n_prompt)


class CompletionChunks:
    """One choice's ``text_completion`` chunks, number ``index``: the one builder of
    ``Llama``'s streams and the server's."""

    def __init__(self, cid: str, created: int, model: str, index: int = 0) -> None:
        self.cid, self.created, self.model, self.index = cid, created, model, index

    def head(self, text: str) -> list[dict[str, Any]]:
        """The echoed prompt's chunk, if there is one."""
        return [responses.completion_chunk(self.cid, self.created, self.model, text, None, None, self.index)] \
            if text else []

    def feed(self, p: Piece) -> list[dict[str, Any]]:
        """The chunk of a piece with text, logprobs or the finish reason (none for an empty piece)."""
        if not (p.text or p.logprobs or p.finish_reason is not None):
            return []
        return [responses.completion_chunk(self.cid, self.created, self.model, p.text,
                                           p.finish_reason, p.logprobs, self.index)]  # type: ignore[arg-type]


def chunks(pieces: Iterator[Piece], head: str, cid: str, created: int, model: str) -> Iterator[dict[str, Any]]:
    """``text_completion`` chunks: ``head`` (the echoed prompt) if any, then each piece with text,
    logprobs or the finish reason."""
    builder = CompletionChunks(cid, created, model)
    yield from builder.head(head)
    for p in pieces:
        yield from builder.feed(p)
