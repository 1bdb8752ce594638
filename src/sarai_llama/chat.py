"""Which chat format a model gets, and llama.cpp's built-in renderer for GGUFs without a template.

A GGUF's own Jinja template is rendered by llama.cpp's C++ Jinja engine
(:mod:`chat_template`); a template given by name uses the built-in renderer
(``llama_chat_apply_template``), which formats known families in C++. Neither
path runs Python template code, so a hostile template cannot run code (the
class of bug behind CVE-2024-34359 in llama-cpp-python's Jinja rendering).

When a GGUF carries no template, the format is chosen from the architecture
(``ARCH_FORMATS``) and the choice is logged; ``chat_format=`` overrides both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Union

from . import _core
from .chat_template import (ChatTemplate, RenderedChat, check_reasoning_format, json_schema_grammar,
                            response_format_schema, tool_choice_and_tools)
from .errors import ParameterError

logger = logging.getLogger("sarai_llama")

#: Architecture (GGUF ``general.architecture``) -> llama.cpp built-in template name,
#: for files that carry no ``tokenizer.chat_template``.
ARCH_FORMATS = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "llama": "llama2",
    "mistral": "mistral-v7",
    "qwen2": "chatml",
    "qwen3": "chatml",
    "phi3": "phi3",
    "falcon": "falcon3",
    "deepseek2": "deepseek2",
}

#: Names llama-cpp-python users pass as ``chat_format`` that llama.cpp spells differently.
FORMAT_ALIASES = {
    "llama-2": "llama2",
    "llama-3": "llama3",
    "mistral-instruct": "mistral-v1",
    "gemma": "gemma",
    "chatml": "chatml",
    "phi-3": "phi3",
}


def builtin_formats() -> list[str]:
    """Template names llama.cpp's renderer knows (valid ``chat_format`` values)."""
    return list(_core.builtin_chat_templates())


class BuiltinChat:
    """A chat format rendered by llama.cpp's built-in renderer (a known family by name).

    For GGUFs without a Jinja template. It has no tool-call format; JSON output
    (``response_format``) is a grammar over the plain answer.
    """

    def __init__(self, name: str, why: str) -> None:
        self.name, self.why = name, why

    def render(self, messages: Iterable[Mapping[str, Any]], *, tools: Any = None, tool_choice: Any = None,
               parallel_tool_calls: bool | None = None, response_format: Mapping[str, Any] | None = None,
               json_schema: Mapping[str, Any] | None = None, add_generation_prompt: bool = True,
               chat_template_kwargs: Mapping[str, Any] | None = None, reasoning_format: str = "none") -> RenderedChat:
        """The prompt in the built-in format; ``reasoning_format`` is checked, and has nothing
        to act on: a built-in format has no thinking block to parse."""
        check_reasoning_format(reasoning_format)
        tools, choice = tool_choice_and_tools(tools, tool_choice)
        if tools and choice != "none":
            raise ParameterError(
                f"tools need a Jinja chat template, and this model uses llama.cpp's built-in {self.name!r} format "
                f"({self.why}); pass chat_format= a Jinja template file or text for the model's family",
                "tools")
        schema = response_format_schema(response_format, json_schema)
        prompt = render(self.name, messages, add_generation_prompt)
        return RenderedChat(prompt=prompt, grammar=json_schema_grammar(schema) if schema is not None else None,
                            why=self.why)


ChatFormat = Union[BuiltinChat, ChatTemplate]


def _jinja_source(chat_format: str) -> str | None:
    """The Jinja text ``chat_format`` gives: a template file's contents, or the text itself."""
    if "{{" in chat_format or "{%" in chat_format:
        return chat_format
    path = Path(chat_format).expanduser()
    if path.suffix in (".jinja", ".j2", ".txt") or path.is_file():
        if not path.is_file():
            raise ValueError(f"chat template file not found: {chat_format}")
        return path.read_text(encoding="utf-8")
    return None


def resolve_chat_format(model: Any, architecture: str, chat_format: str | None) -> ChatFormat:
    """How a model's chats are rendered, with the reason (``.why``).

    Order: the caller's ``chat_format`` (a llama.cpp built-in name, a Jinja file
    or Jinja text); the GGUF's own template (rendered by llama.cpp's C++ Jinja
    engine); the architecture's known built-in format, logged once, for GGUFs
    that carry none. ``model`` is a loaded ``_core.Model``.
    """
    if chat_format:
        name = FORMAT_ALIASES.get(chat_format, chat_format)
        if name in builtin_formats():
            return BuiltinChat(name, f"chat_format={chat_format!r} (llama.cpp's built-in renderer)")
        source = _jinja_source(chat_format)
        if source is None:
            raise ValueError(f"unknown chat_format {chat_format!r}: pass a Jinja template file or text, or one of "
                             f"llama.cpp's built-in names: {', '.join(sorted(builtin_formats()))}")
        origin = "text" if source == chat_format else f"file {chat_format}"
        # With the model, the template sees the vocabulary's BOS/EOS texts.
        return ChatTemplate(source, why=f"chat_format given as Jinja {origin}", _model=model)
    if model.chat_template(None):
        return ChatTemplate.from_model(model)
    fallback = ARCH_FORMATS.get(architecture)
    if fallback is None:
        raise ValueError(
            f"the model has no chat template and architecture {architecture!r} has no known format; "
            "pass chat_format= (a Jinja template file or text, or one of: " + ", ".join(sorted(builtin_formats())) + ")"
        )
    logger.warning(
        "the model has no chat template; using llama.cpp's built-in %r format known for architecture %r "
        "(pass chat_format= to choose another)",
        fallback,
        architecture,
    )
    return BuiltinChat(fallback, f"no template in the GGUF; {architecture!r} architecture's known format")


def message_text(content: Any) -> str:
    """The text of an OpenAI message ``content`` (a string, or a list of parts joined with a newline,
    as llama.cpp's common library joins them for Jinja templates)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            else:
                raise ParameterError("only text message parts are supported", "messages")
        return "\n".join(parts)
    raise ParameterError(f"unsupported message content: {type(content).__name__}", "messages")


def render(template: str, messages: Iterable[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
    """Render OpenAI-style ``messages`` (role, content) into one prompt string."""
    pairs = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or "role" not in msg:
            raise ParameterError(f"message {i} must be a mapping with a 'role'", "messages")
        pairs.append((str(msg["role"]), message_text(msg.get("content"))))
    if not pairs:
        raise ParameterError("messages is empty", "messages")
    return _core.apply_chat_template(template, pairs, add_generation_prompt)
