"""Chat requests and answers, shared by ``Llama.create_chat_completion`` and the server.

A request: OpenAI ``messages`` (+ ``tools``, ``tool_choice``,
``response_format``) -> :meth:`render` through the model's chat format
(:func:`~sarai_llama.chat.resolve_chat_format`) -> a prompt and sampling
constraints -> :func:`apply` to an engine :class:`~sarai_llama.engine.Request`.
An answer: the generated text, read by the format's parser
(:class:`~sarai_llama.chat_template.ChatOutput`) into ``content`` and
``tool_calls``; ``finish_reason`` "tool_calls" when the model called a tool.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from . import responses
from .chat import ChatFormat
from .chat_template import ChatOutput, RenderedChat, response_format_schema
from .engine import Piece, Request

__all__ = ["apply", "chunks", "collect", "legacy_functions", "render"]


def legacy_functions(functions: Sequence[Mapping[str, Any]] | None, function_call: Any,
                     tools: Sequence[Mapping[str, Any]] | None, tool_choice: Any) -> tuple[Any, Any]:
    """OpenAI's deprecated ``functions``/``function_call`` as ``tools``/``tool_choice``."""
    if not functions:
        return tools, tool_choice
    if tools:
        raise ValueError("pass tools or the deprecated functions, not both")
    tools = [{"type": "function", "function": dict(f)} for f in functions]
    if isinstance(function_call, Mapping):
        tool_choice = {"type": "function", "function": {"name": function_call.get("name")}}
    elif function_call is not None:
        tool_choice = function_call
    return tools, tool_choice


def render(fmt: ChatFormat, messages: Sequence[Mapping[str, Any]], *, tools: Any = None, tool_choice: Any = None,
           parallel_tool_calls: bool | None = None, response_format: Mapping[str, Any] | None = None,
           json_schema: Mapping[str, Any] | None = None, grammar: Any = None,
           chat_template_kwargs: Mapping[str, Any] | None = None) -> RenderedChat:
    """Render one chat request; ``ValueError`` for conflicting constraints or bad messages.

    A caller's GBNF ``grammar`` cannot be combined with a ``response_format``
    schema or with tools the model may call: each would need its own grammar.
    """
    if grammar is not None:
        if response_format_schema(response_format, json_schema) is not None:
            raise ValueError("pass grammar or a JSON response_format, not both")
        if tools and tool_choice != "none":
            raise ValueError("a grammar cannot be combined with tools (pass tool_choice='none' or drop the grammar)")
    return fmt.render(messages, tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
                      response_format=response_format, json_schema=json_schema,
                      chat_template_kwargs=chat_template_kwargs)


def apply(request: Request, rendered: RenderedChat) -> Request:
    """``request`` with the render's grammar, stop strings and preserved tokens added."""
    fields = rendered.sampling_fields()
    if fields:
        request.sampling = dataclasses.replace(request.sampling, **fields)
    request.stop = list(request.stop) + [s for s in rendered.stops if s not in request.stop]
    request.preserved_tokens = list(rendered.preserved_tokens)
    return request


def finish_reason(output: ChatOutput, finish: str | None) -> str | None:
    """OpenAI's "tool_calls" when the answer called a tool and ended by itself."""
    return "tool_calls" if finish == "stop" and output.has_tool_calls else finish


def collect(pieces: Iterable[Piece], output: ChatOutput, cid: str, created: int, model: str,
            with_logprobs: bool, n_prompt: int) -> dict[str, Any]:
    """One ``chat.completion`` from a request's pieces."""
    text, finish, use = [], None, None
    lp = responses.empty_logprobs() if with_logprobs else None
    for piece in pieces:
        text.append(piece.text)
        finish, use = piece.finish_reason, piece.usage
        if lp is not None and piece.logprobs:
            responses.merge_logprobs(lp, piece.logprobs)
    output.update("".join(text), partial=False)
    return responses.chat_completion(cid, created, model, output.message(), finish_reason(output, finish),  # type: ignore[arg-type]
                                     lp, use or responses.usage(n_prompt, 0))


def deltas(output: ChatOutput, text: str, finish: str | None) -> list[dict[str, Any]]:
    """The deltas for ``text`` (everything generated so far); the final parse once ``finish`` is set."""
    return output.update(text, partial=finish is None)


def chunks(pieces: Iterator[Piece], output: ChatOutput, cid: str, created: int,
           model: str) -> Iterator[dict[str, Any]]:
    """``chat.completion.chunk`` dicts: the role first, then content and tool-call deltas."""
    yield responses.chat_chunk(cid, created, model, {"role": "assistant"}, None)
    text = ""
    for p in pieces:
        text += p.text
        found = deltas(output, text, p.finish_reason)
        for i, delta in enumerate(found):
            last = i == len(found) - 1
            yield responses.chat_chunk(cid, created, model, delta, None, p.logprobs if last else None)
        if not found and p.logprobs:
            yield responses.chat_chunk(cid, created, model, {}, None, p.logprobs)
        if p.finish_reason is not None:
            yield responses.chat_chunk(cid, created, model, {}, finish_reason(output, p.finish_reason))  # type: ignore[arg-type]
