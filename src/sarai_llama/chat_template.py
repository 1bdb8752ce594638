"""A GGUF's own chat template, tool calls and JSON-schema output, through llama.cpp's common library.

Rendering runs llama.cpp's C++ Jinja engine (``common/jinja``): no Python
template code is ever executed, so a template cannot reach Python objects
(``{{ ''.__class__ }}`` renders as nothing; the class of bug behind
CVE-2024-34359 cannot happen). For the template's model family, common also
formats ``tools`` into the prompt, derives the grammar that constrains a tool
call or a JSON-schema answer, and parses the generated text back into
``content`` and ``tool_calls`` (:class:`ChatOutput`).

Messages, tools and schemas are OpenAI's shapes; they cross into C++ as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _core
from .errors import ParameterError, utf8
from .gbnf import call_or, calls_only

__all__ = ["REASONING_FORMATS", "ChatOutput", "ChatTemplate", "RenderedChat", "check_reasoning_format",
           "json_schema_grammar", "response_format_schema", "response_grammar", "tool_choice_and_tools"]

#: What a thinking model's reasoning becomes, as llama-server's ``--reasoning-format``:
#: "none" leaves it, tags and all, in ``content``; "deepseek" (and "auto", its synonym in
#: llama.cpp) puts it in ``reasoning_content``. (llama-server's "deepseek-legacy", both at
#: once in streams, is not offered: the vendored parser no longer implements it.)
REASONING_FORMATS = ("none", "auto", "deepseek")


def check_reasoning_format(value: Any) -> str:
    """``value`` checked against :data:`REASONING_FORMATS` (a ``ParameterError`` otherwise)."""
    if value not in REASONING_FORMATS:
        raise ParameterError(f"reasoning_format must be one of {', '.join(REASONING_FORMATS)}, not {value!r}",
                             "reasoning_format")
    return str(value)


def _dumps(value: Any, what: str, param: str) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{what} must be JSON-serialisable: {exc}", param) from None
    utf8(text, what)
    return text


def json_schema_grammar(schema: Mapping[str, Any] | bool | str) -> str:
    """GBNF text that only admits JSON valid against ``schema`` (a dict or JSON text).

    llama.cpp's converter (``common/json-schema-to-grammar``); ``ValueError``
    names the problem when the schema is not valid JSON or cannot be expressed.
    """
    if isinstance(schema, str):
        utf8(schema, "the JSON schema")
        text = schema
    else:
        text = _dumps(schema, "the JSON schema", "response_format")
    try:
        return _core.json_schema_to_grammar(text)
    except ValueError as exc:
        raise ParameterError(str(exc), "response_format") from None


def response_format_schema(response_format: Mapping[str, Any] | None,
                           json_schema: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The JSON schema an OpenAI ``response_format`` asks for, or None for free text.

    ``{"type": "json_object"}`` is any JSON object (or its ``schema``, as
    llama-server accepts); ``{"type": "json_schema", "json_schema": {"schema":
    ...}}`` is that schema (always enforced: ``strict`` only says so). A bare
    ``json_schema`` is llama-server's field. Anything else is a ``ValueError``.
    """
    schema: Any = json_schema
    if response_format is not None:
        if not isinstance(response_format, Mapping):
            raise ParameterError("response_format must be an object such as {\"type\": \"json_object\"}",
                                 "response_format")
        kind = response_format.get("type", "text")
        if kind == "json_object":
            schema = response_format.get("schema", schema)
            if schema is None:
                schema = {"type": "object"}
        elif kind == "json_schema":
            wrapper = response_format.get("json_schema")
            if not isinstance(wrapper, Mapping) or "schema" not in wrapper:
                raise ParameterError("response_format json_schema needs {\"json_schema\": {\"name\": ..., "
                                     "\"schema\": {...}}}", "response_format")
            schema = wrapper["schema"]
        elif kind != "text":
            raise ParameterError(f"response_format type must be 'text', 'json_object' or 'json_schema', not {kind!r}",
                                 "response_format")
    if schema is None:
        return None
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, Mapping):
        raise ParameterError("a JSON schema must be an object", "response_format")
    schema = dict(schema)
    return schema or {"type": "object"}  # an empty schema means any object, as llama-server reads it


def response_grammar(response_format: Mapping[str, Any] | None, json_schema: Mapping[str, Any] | None = None,
                     grammar: Any = None) -> str | None:
    """GBNF for a ``response_format`` (see :func:`response_format_schema`), None for free text.

    For completions, where no chat template is involved. ``ValueError`` for a bad
    schema, or for a schema given together with the caller's ``grammar``.
    """
    schema = response_format_schema(response_format, json_schema)
    if schema is None:
        return None
    if grammar:
        raise ParameterError("pass grammar or a JSON response_format, not both", "response_format")
    return json_schema_grammar(schema)


def tool_choice_and_tools(tools: Sequence[Mapping[str, Any]] | None, tool_choice: Any
                          ) -> tuple[list[Mapping[str, Any]], str]:
    """(tools, choice) with OpenAI's named-function choice turned into common's terms.

    ``tool_choice`` None means "auto" with tools and "none" without.
    ``{"type": "function", "function": {"name": N}}`` keeps only tool N and makes
    a call to it required.
    """
    tools = list(tools or [])
    if tool_choice is None:
        return tools, "auto" if tools else "none"
    if isinstance(tool_choice, str):
        if tool_choice not in ("auto", "none", "required"):
            raise ParameterError(f"tool_choice must be 'auto', 'none', 'required' or a named function, "
                                 f"not {tool_choice!r}", "tool_choice")
        if tool_choice == "required" and not tools:
            raise ParameterError("tool_choice 'required' needs tools", "tool_choice")
        return tools, tool_choice
    if isinstance(tool_choice, Mapping) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        chosen = [t for t in tools if isinstance(t, Mapping) and (t.get("function") or {}).get("name") == name]
        if not chosen:
            raise ParameterError(f"tool_choice names function {name!r}, which is not in tools", "tool_choice")
        return chosen, "required"
    raise ParameterError("tool_choice must be 'auto', 'none', 'required' or {\"type\": \"function\", \"function\": "
                         "{\"name\": ...}}", "tool_choice")


@dataclass
class RenderedChat:
    """A rendered chat request: the prompt, and how to sample and read the answer.

    ``grammar`` (GBNF) constrains the answer when a schema or tools ask for it;
    a ``grammar_lazy`` one applies only from a trigger (``trigger_patterns``
    regexes, ``trigger_tokens``) on, and ``grammar_prefill`` is prompt text the
    grammar consumes first. ``preserved_tokens``: special tokens whose text the
    answer must keep (tool-call markers). ``stops``: the format's extra stop
    strings. ``format``: common's name for the output format. ``why``: which
    template rendered it, and why that one.
    """

    prompt: str
    grammar: str | None = None
    grammar_lazy: bool = False
    trigger_patterns: list[str] = field(default_factory=list)
    trigger_tokens: list[int] = field(default_factory=list)
    grammar_prefill: str = ""
    preserved_tokens: list[int] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)
    format: str = "Content-only"
    parses_tool_calls: bool = False
    why: str = ""
    media: list[Any] = field(default_factory=list)  # the prompt's images (vision.media_prompt), set by the server
    _core_render: Any = None

    def sampling_fields(self) -> dict[str, Any]:
        """The :class:`~sarai_llama.sampling.SamplingParams` fields this render sets."""
        if not self.grammar:
            return {}
        return {"grammar": self.grammar, "grammar_root": "root", "grammar_lazy": self.grammar_lazy,
                "grammar_trigger_patterns": tuple(self.trigger_patterns),
                "grammar_trigger_tokens": tuple(self.trigger_tokens),
                "grammar_prefill": "" if self.grammar_lazy else self.grammar_prefill}

    def output(self) -> ChatOutput:
        """A fresh reader of this request's answer."""
        return ChatOutput(self)


class ChatOutput:
    """The answer of one rendered request, read as the text grows.

    :meth:`update` takes the whole text generated so far and returns OpenAI
    ``delta`` dicts (``content``, ``reasoning_content``, ``tool_calls`` with
    ``index``/``id``/``type``/``function``) for what is new; :meth:`message`
    is the final assistant message. Formats without a parser (llama.cpp's
    built-in templates) pass the text through as content.
    """

    def __init__(self, rendered: RenderedChat) -> None:
        self._parser = _core.ChatParser(rendered._core_render) if rendered._core_render is not None else None
        self._content: list[str] = []
        self._message: dict[str, Any] | None = None

    def update(self, text: str, partial: bool = True) -> list[dict[str, Any]]:
        if self._parser is None:
            done = sum(len(c) for c in self._content)
            new = text[done:]
            self._content.append(new)
            return [{"content": new}] if new else []
        deltas = []
        for d in json.loads(self._parser.update(text, partial)):
            delta: dict[str, Any] = {}
            for key in ("reasoning_content", "content"):
                if key in d:
                    delta[key] = d[key]
            if "tool_call" in d:
                call = d["tool_call"]
                entry: dict[str, Any] = {"index": d["tool_call_index"]}
                if call["id"]:
                    entry.update(id=call["id"], type="function")
                fn = {k: call[k] for k in ("name", "arguments") if call[k]}
                if fn:
                    entry["function"] = fn
                delta["tool_calls"] = [entry]
            deltas.append(delta)
        return deltas

    def message(self) -> dict[str, Any]:
        """The assistant message: ``content`` (None when only tool calls), ``tool_calls`` when any."""
        if self._parser is None:
            return {"role": "assistant", "content": "".join(self._content)}
        raw = json.loads(self._parser.message_json())
        msg: dict[str, Any] = {"role": "assistant", "content": raw["content"]}
        if raw.get("reasoning_content"):
            msg["reasoning_content"] = raw["reasoning_content"]
        if raw["tool_calls"]:
            msg["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                                 for c in raw["tool_calls"]]
            if not msg["content"]:
                msg["content"] = None
        return msg

    @property
    def has_tool_calls(self) -> bool:
        return self._parser is not None and self._parser.has_tool_calls


class ChatTemplate:
    """A Jinja chat template, rendered in C++ by llama.cpp's common library.

    ``ChatTemplate(source)`` takes Jinja text (``bos_token``/``eos_token`` are
    what the template sees under those names); :meth:`from_model` takes the
    GGUF's own ``tokenizer.chat_template`` (and its ``tool_use`` variant, used
    when tools are given). ``ValueError`` when the template does not parse.
    """

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "", *, why: str = "",
                 _model: Any = None) -> None:
        if not isinstance(source, str) or (_model is None and not source.strip()):
            raise ValueError("a chat template must be non-empty Jinja text")
        for text, what in ((source, "the chat template"), (bos_token, "bos_token"), (eos_token, "eos_token")):
            utf8(text, what)
        self._tmpl = _core.ChatTemplates(_model, source, bos_token, eos_token)
        self.why = why or "a Jinja template given as text"

    @classmethod
    def from_model(cls, model: Any, why: str = "") -> ChatTemplate:
        """The template a loaded ``_core.Model`` carries (its vocabulary supplies BOS/EOS)."""
        return cls("", why=why or "the model's own chat template (tokenizer.chat_template)", _model=model)

    @property
    def source(self) -> str:
        return str(self._tmpl.source(""))

    @property
    def capabilities(self) -> dict[str, bool]:
        """What llama.cpp found the template supports (system role, tools, tool calls, ...)."""
        return dict(json.loads(self._tmpl.caps_json()))

    def render(self, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] | None = None,
               tool_choice: Any = None, parallel_tool_calls: bool | None = None,
               response_format: Mapping[str, Any] | None = None, json_schema: Mapping[str, Any] | None = None,
               add_generation_prompt: bool = True, chat_template_kwargs: Mapping[str, Any] | None = None,
               reasoning_format: str = "none") -> RenderedChat:
        """Render OpenAI ``messages`` (text or text parts; ``tool`` messages with
        ``tool_call_id``; assistant ``tool_calls``) with ``tools`` described the
        family's way; the answer's thinking is parsed as ``reasoning_format`` says
        (:data:`REASONING_FORMATS`). ``ValueError`` for malformed messages or a template error."""
        if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
            raise ParameterError("messages must be a non-empty list of {'role': ..., 'content': ...}", "messages")
        tools, choice = tool_choice_and_tools(tools, tool_choice)
        inputs = _core.ChatInputs()
        inputs.messages_json = _dumps(list(messages), "messages", "messages")
        if tools:
            inputs.tools_json = _dumps(tools, "tools", "tools")
        inputs.tool_choice = choice if tools else "auto"
        inputs.parallel_tool_calls = bool(parallel_tool_calls)
        schema = response_format_schema(response_format, json_schema)
        # With tools the model may call, the format is the text answer's (OpenAI's reading), built
        # here: llama.cpp's renderers would let the format replace the tools.
        beside_tools = schema is not None and bool(tools) and choice != "none"
        if schema is not None and not beside_tools:
            inputs.json_schema = _dumps(schema, "the JSON schema", "response_format")
        inputs.add_generation_prompt = bool(add_generation_prompt)
        inputs.reasoning_format = check_reasoning_format(reasoning_format)
        if chat_template_kwargs:
            inputs.template_kwargs_json = _dumps(dict(chat_template_kwargs), "chat_template_kwargs",
                                                 "chat_template_kwargs")
        r = self._tmpl.apply(inputs)
        grammar, lazy = r.grammar or None, r.grammar_lazy
        if grammar and tools and choice == "required" and not lazy:
            grammar = calls_only(grammar, r.generation_prompt, bool(parallel_tool_calls))
        if beside_tools:
            grammar, lazy = self._calls_or_json(inputs, r, grammar if choice == "required" else None,
                                                schema, bool(parallel_tool_calls))
        return RenderedChat(
            prompt=r.prompt, grammar=grammar, grammar_lazy=lazy,
            trigger_patterns=list(r.trigger_patterns) if lazy else [],
            trigger_tokens=list(r.trigger_tokens) if lazy else [],
            grammar_prefill=r.generation_prompt, preserved_tokens=list(r.preserved_tokens),
            stops=list(r.additional_stops), format=r.format, parses_tool_calls=r.parse_tool_calls,
            why=self.why, _core_render=r)

    def _calls_or_json(self, inputs: Any, r: Any, required: str | None, schema: dict[str, Any],
                       parallel: bool) -> tuple[str, bool]:
        """(grammar, lazy) for tools the model may call beside a JSON format: a forced choice
        (``required``, its call grammar) is the call alone, and OpenAI applies the format to the
        final text answer only; with "auto" the answer is a call or JSON under ``schema``, from its
        first token on. A 400 naming both fields where the template has no call syntax for it."""
        both = "tools (with tool_choice " + inputs.tool_choice + ") and a JSON response_format"
        if required is None:
            inputs.tool_choice = "required"
            forced = self._tmpl.apply(inputs)
            inputs.tool_choice = "auto"
            if forced.grammar and not forced.grammar_lazy and forced.generation_prompt == r.generation_prompt:
                required = calls_only(forced.grammar, forced.generation_prompt, parallel)
        if not required:
            raise ParameterError(f"{both} cannot be combined with this chat template ({self.why}): it has no "
                                 "tool-call grammar to set beside the format; send one of the two",
                                 "response_format")
        if inputs.tool_choice == "required":
            return required, False
        try:
            return call_or(required, json_schema_grammar(schema)), False
        except ParameterError:
            raise
        except ValueError as exc:
            raise ParameterError(f"{both} cannot be combined with this chat template ({self.why}): {exc}",
                                 "response_format") from None

