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
from .engine import Collected, Piece, Request
from .errors import ParameterError
from .sampling import SamplingParams

__all__ = ["ChatChunks", "ChatDeltas", "answer", "apply", "as_openai_types", "chunks", "collect", "finish_reason",
           "legacy_functions", "render", "render_call", "reply", "sampling_kwargs"]


def sampling_kwargs(kwargs: dict[str, Any], known: Iterable[str]) -> dict[str, Any]:
    """``kwargs`` without the OpenAI fields set to nothing (None, [], {}), which are harmless;
    any other key not in ``known`` is a ``ValueError``."""
    known = set(known)
    out = {}
    for key, value in kwargs.items():
        if key in known:
            out[key] = value
        elif value not in (None, [], {}):
            raise ValueError(f"{key} is not supported by sarai_llama's chat completion")
    return out


def as_openai_types(result: Any, stream: bool) -> Any:
    """A chat completion dict (or its chunks when ``stream``) as the ``openai`` package's
    ``ChatCompletion`` (``ChatCompletionChunk`` s)."""
    try:
        from openai.types.chat import ChatCompletion, ChatCompletionChunk
    except ImportError as exc:
        raise ImportError("create_chat_completion_openai_v1 needs the openai package: pip install openai") from exc
    if stream:
        return (ChatCompletionChunk(**chunk) for chunk in result)
    return ChatCompletion(**result)


def legacy_functions(functions: Sequence[Mapping[str, Any]] | None, function_call: Any,
                     tools: Sequence[Mapping[str, Any]] | None, tool_choice: Any) -> tuple[Any, Any]:
    """OpenAI's deprecated ``functions``/``function_call`` as ``tools``/``tool_choice``."""
    if not functions:
        return tools, tool_choice
    if tools:
        raise ParameterError("pass tools or the deprecated functions, not both", "functions")
    tools = [{"type": "function", "function": dict(f)} for f in functions]
    if isinstance(function_call, Mapping):
        tool_choice = {"type": "function", "function": {"name": function_call.get("name")}}
    elif function_call is not None:
        tool_choice = function_call
    return tools, tool_choice


#: ``Llama.create_chat_completion``'s keywords beyond OpenAI's that go on to the request.
LLAMA_SAMPLING = ("temp", "tfs_z", "penalize_nl", "stopping_criteria")


def render_call(fmt: ChatFormat, messages: Sequence[Mapping[str, Any]], kwargs: dict[str, Any], *,
                functions: Any = None, function_call: Any = None,
                **render_keywords: Any) -> tuple[RenderedChat, dict[str, Any]]:
    """``Llama.create_chat_completion``'s chat rendered (:func:`render`, OpenAI's deprecated
    ``functions`` as tools: :func:`legacy_functions`) and its other keywords: sampling keywords
    (:class:`~sarai_llama.sampling.SamplingParams`' fields, :data:`LLAMA_SAMPLING`) pass on, OpenAI
    fields set to nothing are dropped, any other is a ``ValueError`` (:func:`sampling_kwargs`)."""
    kwargs = sampling_kwargs(kwargs, [*SamplingParams.__dataclass_fields__, *LLAMA_SAMPLING])
    tools, tool_choice = legacy_functions(functions, function_call, render_keywords.pop("tools", None),
                                          render_keywords.pop("tool_choice", None))
    return render(fmt, messages, tools=tools, tool_choice=tool_choice, **render_keywords), kwargs


def render(fmt: ChatFormat, messages: Sequence[Mapping[str, Any]], *, tools: Any = None, tool_choice: Any = None,
           parallel_tool_calls: bool | None = None, response_format: Mapping[str, Any] | None = None,
           json_schema: Mapping[str, Any] | None = None, grammar: Any = None,
           chat_template_kwargs: Mapping[str, Any] | None = None, reasoning_format: str = "none") -> RenderedChat:
    """Render one chat request; ``ValueError`` for conflicting constraints or bad messages.

    A caller's GBNF ``grammar`` cannot be combined with a ``response_format``
    schema or with tools the model may call: each would need its own grammar.
    ``reasoning_format``: what the answer's thinking becomes (``chat_template.REASONING_FORMATS``).
    """
    if grammar is not None:
        if response_format_schema(response_format, json_schema) is not None:
            raise ParameterError("pass grammar or a JSON response_format, not both", "response_format")
        if tools and tool_choice != "none":
            raise ParameterError("a grammar cannot be combined with tools (pass tool_choice='none' or drop the grammar)",
                                 "tools")
    return fmt.render(messages, tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
                      response_format=response_format, json_schema=json_schema,
                      chat_template_kwargs=chat_template_kwargs, reasoning_format=reasoning_format)


def apply(request: Request, rendered: RenderedChat) -> Request:
    """``request`` with the render's grammar, stop strings and preserved tokens added."""
    fields = rendered.sampling_fields()
    if fields:
        request.sampling = dataclasses.replace(request.sampling, **fields)
    request.stop = list(request.stop) + [s for s in rendered.stops if s not in request.stop]
    request.preserved_tokens = list(rendered.preserved_tokens)
    if rendered.media:
        request.media = list(rendered.media)
    return request


def finish_reason(output: ChatOutput, finish: str | None) -> str | None:
    """OpenAI's "tool_calls" when the answer called a tool and ended by itself."""
    return "tool_calls" if finish == "stop" and output.has_tool_calls else finish


def answer(output: ChatOutput, got: Collected, cid: str, created: int, model: str,
           use: responses.Usage, index: int = 0) -> dict[str, Any]:
    """One ``chat.completion`` from a gathered answer (``use``: the usage to report), choice ``index``."""
    output.update(got.text, partial=False)
    return responses.chat_completion(cid, created, model, output.message(),  # type: ignore[arg-type]
                                     finish_reason(output, got.finish_reason), got.logprobs, use, index)


def collect(pieces: Iterable[Piece], output: ChatOutput, cid: str, created: int, model: str,
            with_logprobs: bool, n_prompt: int) -> dict[str, Any]:
    """One ``chat.completion`` from a request's pieces."""
    got = Collected.of(pieces, with_logprobs, n_prompt)
    return answer(output, got, cid, created, model, responses.usage(got.n_prompt, got.n_generated))


class ChatDeltas:
    """One answer's OpenAI ``delta`` dicts (content, reasoning, tool calls), piece by piece.

    The format's parser rereads the whole text so far at each piece; on the last
    piece :attr:`finish_reason` is set ("tool_calls" when the answer called a
    tool). Every protocol's stream (OpenAI chunks, Anthropic's blocks, the
    Responses API's items) is built from these deltas.
    """

    def __init__(self, output: ChatOutput) -> None:
        self.output = output
        self.text = ""  # everything generated so far: the parser reads it whole
        self.finish_reason: str | None = None

    def feed(self, piece: Piece) -> list[dict[str, Any]]:
        self.text += piece.text
        found = self.output.update(self.text, partial=piece.finish_reason is None)
        if piece.finish_reason is not None:
            self.finish_reason = finish_reason(self.output, piece.finish_reason)
        return found


class ChatChunks:
    """One choice's ``chat.completion.chunk`` dicts, piece by piece.

    :meth:`first` is OpenAI's opening chunk (the role, with empty content);
    :meth:`feed` turns each piece's :class:`ChatDeltas` into chunks (the last
    delta carries the piece's logprobs) and, on the last piece, the chunk with
    the finish reason. ``Llama.create_chat_completion`` iterates pieces, the
    server awaits them; both feed them here.
    """

    def __init__(self, output: ChatOutput, cid: str, created: int, model: str, index: int = 0) -> None:
        self.deltas = ChatDeltas(output)
        self.cid, self.created, self.model, self.index = cid, created, model, index

    @property
    def finish_reason(self) -> str | None:
        return self.deltas.finish_reason

    def _chunk(self, delta: dict[str, Any], finish: str | None, logprobs: Any = None) -> dict[str, Any]:
        return responses.chat_chunk(self.cid, self.created, self.model, delta, finish,  # type: ignore[arg-type]
                                    logprobs, self.index)

    def first(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""}, None)

    def feed(self, piece: Piece) -> list[dict[str, Any]]:
        found = self.deltas.feed(piece)
        out = [self._chunk(delta, None, piece.logprobs if i == len(found) - 1 else None)
               for i, delta in enumerate(found)]
        if not found and piece.logprobs:
            out.append(self._chunk({}, None, piece.logprobs))
        if piece.finish_reason is not None:
            out.append(self._chunk({}, self.finish_reason))
        return out


def chunks(pieces: Iterator[Piece], output: ChatOutput, cid: str, created: int,
           model: str) -> Iterator[dict[str, Any]]:
    """``chat.completion.chunk`` dicts: the role first, then content and tool-call deltas."""
    stream = ChatChunks(output, cid, created, model)
    yield stream.first()
    for piece in pieces:
        yield from stream.feed(piece)


def reply(pieces: Iterator[Piece], output: ChatOutput, model: str, stream: bool, with_logprobs: bool,
          n_prompt: int) -> dict[str, Any] | Iterator[dict[str, Any]]:
    """``Llama.create_chat_completion``'s answer under a new id: its chunks when ``stream``
    (:func:`chunks`), else one ``chat.completion`` (:func:`collect`)."""
    cid, created = responses.chat_id(), responses.now()
    if stream:
        return chunks(pieces, output, cid, created, model)
    return collect(pieces, output, cid, created, model, with_logprobs, n_prompt)
