"""The one path from a parsed body to the engine: prompt tokens, sampling, limits, a :class:`Prepared`.

Routes parse their protocol's body and render chat templates; what reaches the
engine is built here, once, for all of them, and every bad value is a 400
naming its field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import chat_completion
from ..chat_template import ChatOutput, RenderedChat, response_grammar
from ..engine import Request
from ..errors import utf8
from ..sampling import SamplingParams
from .errors import bad, invalid
from .lifecycle import ServerState
from .openai_schemas import Generation

__all__ = ["Prepared", "check_n", "check_tokens", "json_grammar", "max_tokens", "prepare", "sampling_from", "stops",
           "tokenize_prompt", "utf8_text"]


@dataclass
class Prepared:
    """A request ready for the engine, with what the response needs."""

    request: Request
    n_prompt: int
    echo_text: str = ""
    include_usage: bool = False
    rendered: RenderedChat | None = None  # a chat request: how its answer is parsed

    def output(self) -> ChatOutput | None:
        """A fresh reader of one choice's answer (chat requests only)."""
        return self.rendered.output() if self.rendered is not None else None


def utf8_text(text: str, param: str) -> bytes:
    """``text`` as UTF-8; a 400 naming ``param`` for text that has none (a lone surrogate)."""
    try:
        return utf8(text, param)
    except ValueError as exc:
        raise invalid(exc, param) from None


def tokenize_prompt(state: ServerState, text: str, param: str) -> list[int]:
    """``text`` as the model's tokens (BOS first where the model wants it); an empty text is BOS alone."""
    model = state.model
    if text:
        return list(model.tokenize(utf8_text(text, param), bool(model.add_bos), True))
    return [int(model.token_bos)] if model.add_bos else []


def check_tokens(state: ServerState, tokens: list[int], param: str) -> None:
    """400 for an empty prompt or a token id outside the vocabulary."""
    if not tokens:
        raise bad("the prompt is empty", param)
    for t in tokens:
        if not 0 <= t < state.n_vocab:
            raise bad(f"token id {t} is out of range [0, {state.n_vocab})", param)


def sampling_from(body: Generation, n_vocab: int) -> SamplingParams:
    """The HTTP body's sampling fields -> :class:`SamplingParams` (its checks: ValueError -> 400)."""
    kw: dict[str, Any] = {}
    for name in ("temperature", "top_p", "top_k", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
                 "frequency_penalty", "seed", "mirostat_tau", "mirostat_eta", "grammar"):
        value = getattr(body, name)
        if value is not None:
            kw[name] = value
    last_n = body.penalty_last_n if body.penalty_last_n is not None else body.repeat_last_n
    if last_n is not None:
        kw["penalty_last_n"] = last_n
    mirostat = body.mirostat_mode if body.mirostat_mode is not None else body.mirostat
    if mirostat is not None:
        kw["mirostat_mode"] = mirostat
    if body.logit_bias:
        for key, value in body.logit_bias.items():
            if key.isdigit() and int(key) >= n_vocab:
                raise bad(f"logit_bias token id {key} is out of range [0, {n_vocab})", "logit_bias")
            if not -100.0 <= value <= 100.0:  # OpenAI's range; the Python API takes any float
                raise bad(f"logit_bias[{key}] must be in [-100, 100], not {value:g}", "logit_bias")
        kw["logit_bias"] = tuple(body.logit_bias.items())
    try:
        return SamplingParams(**kw)
    except ValueError as exc:
        raise invalid(exc) from None


def stops(stop: str | list[str] | None) -> list[str]:
    """The body's ``stop`` as a list (OpenAI's limits: 16 strings of 1000 characters)."""
    if stop is None:
        return []
    given = [stop] if isinstance(stop, str) else list(stop)
    if len(given) > 16 or any(len(s) > 1000 for s in given):
        raise bad("at most 16 stop strings of at most 1000 characters each", "stop")
    return [s for s in given if s]


def max_tokens(state: ServerState, body: Generation, requested: int | None, n_prompt: int,
               default: int | None) -> int | None:
    """The generation budget, checked against the context like OpenAI does (400, never a silent cut)."""
    if requested is None and body.n_predict is not None:
        requested = None if body.n_predict < 0 else body.n_predict
    elif requested is None:
        requested = default
    limit = state.n_ctx_seq
    if n_prompt >= limit:
        raise bad(f"This model's maximum context length is {limit} tokens. However, your prompt is {n_prompt} "
                  "tokens. Please reduce the length of the prompt.", "messages", "context_length_exceeded")
    if requested is None:
        return None
    if requested < 1:
        raise bad(f"max_tokens must be at least 1, not {requested}", "max_tokens")
    cap = state.settings.max_tokens_limit
    if cap and requested > cap:
        raise bad(f"max_tokens is {requested}; this server allows at most {cap}", "max_tokens")
    if n_prompt + requested > limit:
        raise bad(f"This model's maximum context length is {limit} tokens. However, you requested "
                  f"{n_prompt + requested} tokens ({n_prompt} in the prompt, {requested} in the completion). "
                  "Please reduce the length of the prompt or completion.", "max_tokens", "context_length_exceeded")
    return requested


def check_n(body: Generation) -> None:
    """400 unless ``n`` (choices per request) is in [1, 16]."""
    if body.n is not None and not 1 <= body.n <= 16:
        raise bad(f"n must be in [1, 16], not {body.n}", "n")


def json_grammar(body: Generation) -> str | None:
    """GBNF for the body's ``response_format``/``json_schema`` (400 for a bad or conflicting one)."""
    try:
        return response_grammar(body.response_format, body.json_schema, body.grammar)
    except ValueError as exc:
        raise invalid(exc, "response_format") from None


def prepare(state: ServerState, body: Generation, tokens: list[int], max_new: int | None, n_probs: int | None,
            echo: str, grammar: str | None = None, rendered: RenderedChat | None = None) -> Prepared:
    """The engine request for ``body``: ``grammar``, a completion's response_format GBNF;
    ``rendered``, a chat request's constraints, stops and answer parser."""
    sampling = sampling_from(body, state.n_vocab)
    if grammar is not None:
        sampling = dataclasses.replace(sampling, grammar=grammar)
    request = Request(tokens, sampling, max_new, stops(body.stop), n_probs, bool(body.ignore_eos))
    if rendered is not None:
        chat_completion.apply(request, rendered)
    return Prepared(request, len(tokens), echo, bool(body.stream_options and body.stream_options.include_usage),
                    rendered)
