"""What goes into the engine and what comes out, in no protocol's shape.

A :class:`Request` in; :class:`Piece` s out (text, token ids, :class:`TokenLogprob`
records, token counts, a finish reason), gathered into a :class:`Collected` for a
whole answer. OpenAI's, Anthropic's and llama-cpp-python's shapes are built from
these by the protocol modules (:mod:`~sarai_llama.responses` and the server's routes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ._numpy import numpy as _numpy
from .sampling import SamplingParams
from .stops import normalize_stops

__all__ = ["Collected", "EngineError", "Piece", "Request", "TokenLogprob"]


class EngineError(RuntimeError):
    """llama.cpp failed while decoding this request (the engine stays usable)."""


@dataclass
class Request:
    """One generation. ``prompt``: token ids. ``max_tokens`` None: until the context
    ends. ``stop``: strings that end the text (not shown). ``logprobs`` None: off;
    n >= 0: the sampled token's logprob and the n most likely alternatives.
    ``ignore_eos``: go on past end-of-generation tokens. ``logits_processor`` /
    ``stopping_criteria``: llama-cpp-python's callables (they make every token
    cross into Python; they run in the stepping thread). ``text_offset``:
    where this request's text starts in ``logprobs.text_offset``.
    ``preserved_tokens``: special tokens whose text the answer keeps (a chat
    format's tool-call markers); other special tokens add no text.
    ``draft_max`` / ``draft_min``: this request's speculation limits (None: the
    engine's; see :class:`~sarai_llama.llama_speculative.Speculation`).
    ``media``: the prompt's images (``_core.MediaSpan``, from :func:`~sarai_llama.vision.media_prompt`),
    whose positions in ``prompt`` hold negative placeholders.
    """

    prompt: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = 16
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None
    ignore_eos: bool = False
    logits_processor: Callable[[Any, Any], Any] | None = None
    stopping_criteria: Callable[[Any, Any], bool] | None = None
    text_offset: int = 0
    preserved_tokens: list[int] = field(default_factory=list)
    draft_max: int | None = None
    draft_min: int | None = None
    media: list[Any] = field(default_factory=list)

    @classmethod
    def from_keywords(cls, prompt: list[int], *, max_tokens: int | None = 16, stop: Any = None,
                      logprobs: int | None = None, logits_processor: Any = None, stopping_criteria: Any = None,
                      text_offset: int = 0, penalty_last_n: int = 64, **sampling: Any) -> Request:
        """A request from llama-cpp-python's completion keywords, each checked here: ``logprobs``
        None or an integer >= 0 (else ``ValueError``), ``stop`` None, a string or a list
        (:func:`~sarai_llama.stops.normalize_stops`), sampling keywords as
        :meth:`SamplingParams.from_kwargs` (``penalty_last_n``: the repetition penalties'
        window, in tokens). Logits processors and stopping criteria need numpy: a clear error
        where it cannot run (logprobs are computed in C++)."""
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int) or logprobs < 0):
            raise ValueError(f"logprobs must be a non-negative integer, not {logprobs!r}")
        params = SamplingParams.from_kwargs(penalty_last_n=penalty_last_n, **sampling)
        if logits_processor or stopping_criteria:
            _numpy()
        return cls(prompt=prompt, sampling=params, max_tokens=max_tokens, stop=normalize_stops(stop),
                   logprobs=logprobs, logits_processor=logits_processor, stopping_criteria=stopping_criteria,
                   text_offset=text_offset)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability, in no protocol's shape.

    ``token``: its text; ``text_offset``: characters from the start of the request's
    text (``Request.text_offset`` plus what was generated before it); ``logprob``:
    natural log of its probability; ``top``: the request's ``logprobs`` most likely
    tokens as (text, logprob), best first, then the token itself when it is not
    among them (a text that several tokens spell counts once, at its best).
    """

    token: str
    text_offset: int
    logprob: float
    top: tuple[tuple[str, float], ...]


@dataclass
class Piece:
    """What a reader gets: text released now, its logprobs, and at the end the finish reason.

    ``tokens``: the ids sampled since the previous piece (a stop string may hide
    their text). ``logprobs``: one record per token in ``text`` (None: not asked for).
    ``finish_reason`` is set on the last piece only: "stop", "length" or
    "cancelled"; ``stop`` too: the stop string that ended the text, if one did.
    ``n_prompt`` / ``n_generated``: the request's prompt tokens and the tokens
    generated so far; ``n_reused``: prompt tokens served from a cache.
    """

    text: str
    tokens: list[int]
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None
    n_prompt: int
    n_generated: int
    n_reused: int = 0
    stop: str | None = None


class Collected:
    """A request's pieces gathered into one answer: text, finish reason, usage, logprobs.

    ``with_logprobs``: the request asked for logprobs (``logprobs`` is then a
    list of records, empty if no token came); ``n_prompt``: the prompt's tokens,
    until a piece says. Both drivers gather non-streamed answers so.
    """

    def __init__(self, with_logprobs: bool, n_prompt: int = 0) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.stop: str | None = None  # the stop string that ended the text, if one did
        self.n_prompt, self.n_generated = n_prompt, 0
        self.logprobs: list[TokenLogprob] | None = [] if with_logprobs else None

    @classmethod
    def of(cls, pieces: Iterable[Piece], with_logprobs: bool, n_prompt: int = 0) -> Collected:
        """All of ``pieces`` gathered (the inline driver's answer)."""
        got = cls(with_logprobs, n_prompt)
        for piece in pieces:
            got.add(piece)
        return got

    def add(self, piece: Piece) -> None:
        self.parts.append(piece.text)
        self.finish_reason, self.stop = piece.finish_reason, piece.stop
        self.n_prompt, self.n_generated = piece.n_prompt, piece.n_generated
        if self.logprobs is not None and piece.logprobs:
            self.logprobs.extend(piece.logprobs)

    @property
    def text(self) -> str:
        return "".join(self.parts)
