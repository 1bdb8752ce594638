"""The one path from a parsed body to the engine: prompt tokens, sampling, limits, a :class:`Prepared`.

Routes parse their protocol's body into protocol-neutral parts (OpenAI-shaped
chat messages and tools, a :class:`Sampling`, a token budget, stop strings);
the chat template, the tokens and what reaches the engine are built here, once,
for all of them, and every bad value is a 400 naming its field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from .. import chat_completion, vision
from ..chat_template import ChatOutput, RenderedChat, json_schema_grammar, response_format_schema, response_grammar
from ..engine import Request
from ..errors import utf8
from ..llama_speculative import check_draft_limits
from ..sampling import SamplingParams
from .errors import bad, invalid
from .served import Served

__all__ = ["Prepared", "Sampling", "check_tokens", "json_grammar", "max_tokens", "prepare", "render_chat",
           "sampling_from", "stops", "tokenize_prompt", "utf8_text"]


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


#: A chat image for a model served without a projector.
NO_PROJECTOR = "this model takes no images: start the server with --mmproj PATH (the model's projector GGUF)"


def utf8_text(text: str, param: str) -> bytes:
    """``text`` as UTF-8; a 400 naming ``param`` for text that has none (a lone surrogate)."""
    try:
        return utf8(text, param)
    except ValueError as exc:
        raise invalid(exc, param) from None


def tokenize_prompt(served: Served, text: str, param: str) -> list[int]:
    """``text`` as the model's tokens (BOS first where the model wants it); an empty text is BOS alone."""
    model = served.model
    if text:
        return list(model.tokenize(utf8_text(text, param), bool(model.add_bos), True))
    return [int(model.token_bos)] if model.add_bos else []


def check_tokens(served: Served, tokens: list[int], param: str) -> None:
    """400 for an empty prompt or a token id outside the vocabulary."""
    if not tokens:
        raise bad("the prompt is empty", param)
    for t in tokens:
        if not 0 <= t < served.n_vocab:
            raise bad(f"token id {t} is out of range [0, {served.n_vocab})", param)


@dataclass
class Sampling:
    """A request's sampling fields in no protocol's shape (None: the library's default).

    Each protocol fills one from its own field names; :func:`sampling_from`
    checks them, once, for all. ``logit_bias`` maps a token id (as text) to a bias.
    """

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    penalty_last_n: int | None = None
    seed: int | None = None
    mirostat_mode: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    grammar: str | None = None
    logit_bias: dict[str, float] | None = None


def sampling_from(fields: Sampling, n_vocab: int) -> SamplingParams:
    """``fields`` -> :class:`SamplingParams` (its checks: ValueError -> 400 naming the field)."""
    kw: dict[str, Any] = {f.name: getattr(fields, f.name) for f in dataclasses.fields(fields)
                          if f.name != "logit_bias" and getattr(fields, f.name) is not None}
    if fields.logit_bias:
        for key, value in fields.logit_bias.items():
            if key.isdigit() and int(key) >= n_vocab:
                raise bad(f"logit_bias token id {key} is out of range [0, {n_vocab})", "logit_bias")
            if not -100.0 <= value <= 100.0:  # OpenAI's range; the Python API takes any float
                raise bad(f"logit_bias[{key}] must be in [-100, 100], not {value:g}", "logit_bias")
        kw["logit_bias"] = tuple(fields.logit_bias.items())
    try:
        return SamplingParams(**kw)
    except ValueError as exc:
        raise invalid(exc) from None


def stops(stop: str | list[str] | None, param: str = "stop") -> list[str]:
    """A body's stop strings as a list (OpenAI's limits: 16 strings of 1000 characters)."""
    if stop is None:
        return []
    given = [stop] if isinstance(stop, str) else list(stop)
    if len(given) > 16 or any(len(s) > 1000 for s in given):
        raise bad("at most 16 stop strings of at most 1000 characters each", param)
    return [s for s in given if s]


def max_tokens(served: Served, requested: int | None, n_prompt: int, param: str = "max_tokens",
               prompt_param: str = "messages") -> int | None:
    """The generation budget (None: until the context ends), checked against the context like
    OpenAI does (400, never a silent cut); ``param`` and ``prompt_param`` name the body's fields."""
    limit = served.n_ctx_seq
    if n_prompt >= limit:
        raise bad(f"This model's maximum context length is {limit} tokens. However, your prompt is {n_prompt} "
                  "tokens. Please reduce the length of the prompt.", prompt_param, "context_length_exceeded")
    if requested is None:
        return None
    if requested < 1:
        raise bad(f"{param} must be at least 1, not {requested}", param)
    cap = served.settings.max_tokens_limit
    if cap and requested > cap:
        raise bad(f"{param} is {requested}; this server allows at most {cap}", param)
    if n_prompt + requested > limit:
        raise bad(f"This model's maximum context length is {limit} tokens. However, you requested "
                  f"{n_prompt + requested} tokens ({n_prompt} in the prompt, {requested} in the completion). "
                  "Please reduce the length of the prompt or completion.", param, "context_length_exceeded")
    return requested


def json_grammar(response_format: dict[str, Any] | None, json_schema: dict[str, Any] | None,
                 grammar: str | None) -> str | None:
    """GBNF for a completion's ``response_format``/``json_schema`` (400 for a bad or conflicting one)."""
    try:
        return response_grammar(response_format, json_schema, grammar)
    except ValueError as exc:
        raise invalid(exc, "response_format") from None


async def render_chat(served: Served, messages: list[dict[str, Any]], param: str = "messages", *,
                      tools: Any = None, tool_choice: Any = None, parallel_tool_calls: bool | None = None,
                      response_format: dict[str, Any] | None = None, json_schema: dict[str, Any] | None = None,
                      grammar: str | None = None, chat_template_kwargs: dict[str, Any] | None = None,
                      reasoning_format: str | None = None) -> tuple[RenderedChat, list[int]]:
    """OpenAI-shaped ``messages`` (+ tools, JSON output) through the model's chat template, and the
    prompt's tokens, in a worker thread; every protocol's chat request comes here. The template's
    own errors are 400s about ``param`` (the field the messages came from). ``reasoning_format``
    None: the server's ``--reasoning-format``."""
    template = served.template
    if template is None:
        raise bad(served.template_error or "this model has no chat template", param)

    vision_of = getattr(served.runtime, "vision", None)

    def run() -> tuple[RenderedChat, list[int]]:
        try:
            chat, pictures = vision.chat_images(vision_of, messages, no_projector=NO_PROJECTOR, param=param)
            # The schema first, on its own: the template's render reports a schema that does not
            # convert as its own error, which would name the messages instead of the format.
            schema = response_format_schema(response_format, json_schema)
            if schema is not None and grammar is None:
                json_schema_grammar(schema)
            rendered = chat_completion.render(
                template, chat, tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
                response_format=response_format, json_schema=json_schema, grammar=grammar,
                chat_template_kwargs=chat_template_kwargs,
                reasoning_format=reasoning_format or served.settings.reasoning_format)
            if pictures:  # decoded and encoded here, in the worker thread, never in the engine's step
                got = vision.media_prompt(vision_of, served.model, rendered.prompt, pictures, param)
                rendered.media = list(got.media)
                return rendered, list(got.tokens)
        except ValueError as exc:
            raise invalid(exc, param) from None
        return rendered, tokenize_prompt(served, rendered.prompt, param)

    rendered, tokens = await run_in_threadpool(run)
    if not rendered.media:  # image positions hold placeholders (vision.media_prompt), all else was checked
        check_tokens(served, tokens, param)
    return rendered, tokens


def prepare(served: Served, sampling: Sampling, tokens: list[int], max_new: int | None, *,
            stop: list[str] | None = None, n_probs: int | None = None, ignore_eos: bool = False, echo: str = "",
            include_usage: bool = False, grammar: str | None = None, rendered: RenderedChat | None = None,
            draft_max: int | None = None, draft_min: int | None = None) -> Prepared:
    """The engine request: ``grammar``, a completion's response_format GBNF; ``rendered``, a chat
    request's constraints, stops and answer parser; ``stop``, checked stop strings (:func:`stops`);
    ``draft_max`` / ``draft_min``, llama-server's ``speculative.n_max`` / ``n_min`` (None: the server's)."""
    params = sampling_from(sampling, served.n_vocab)
    if grammar is not None:
        params = dataclasses.replace(params, grammar=grammar)
    try:
        check_draft_limits(draft_max, draft_min, ("speculative.n_max", "speculative.n_min"))
    except ValueError as exc:
        raise invalid(exc) from None
    request = Request(prompt=tokens, sampling=params, max_tokens=max_new, stop=list(stop or []), logprobs=n_probs,
                      ignore_eos=ignore_eos, draft_max=draft_max, draft_min=draft_min)
    if rendered is not None:
        chat_completion.apply(request, rendered)
    return Prepared(request, len(tokens), echo, include_usage, rendered)
