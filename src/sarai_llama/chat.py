"""Chat prompts: which template a model gets, rendered without running template code.

Rendering uses llama.cpp's built-in template renderer (``llama_chat_apply_template``),
which recognises the known template families and formats messages in C++. A
GGUF's template string is only *matched*, never executed, so a hostile
template cannot run code (the class of bug behind CVE-2024-34359 in
llama-cpp-python's Jinja rendering).

When a GGUF carries no template, the format is chosen from the architecture
(``ARCH_FORMATS``) and the choice is logged; ``chat_format=`` overrides both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from . import _core

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


def resolve_template(model_template: str | None, architecture: str, chat_format: str | None) -> tuple[str, str]:
    """Pick the template for a model: (template name or string, why).

    Order: the caller's ``chat_format``; the GGUF's own template; the
    architecture's known format.
    """
    if chat_format:
        name = FORMAT_ALIASES.get(chat_format, chat_format)
        if name not in builtin_formats():
            raise ValueError(
                f"unknown chat_format {chat_format!r}; llama.cpp knows: {', '.join(sorted(builtin_formats()))}"
            )
        return name, f"chat_format={chat_format!r}"
    if model_template:
        return model_template, "the model's own chat template (tokenizer.chat_template)"
    fallback = ARCH_FORMATS.get(architecture)
    if fallback is None:
        raise ValueError(
            f"the model has no chat template and architecture {architecture!r} has no known format; "
            "pass chat_format= (one of: " + ", ".join(sorted(builtin_formats())) + ")"
        )
    logger.warning(
        "the model has no chat template; using the %r format known for architecture %r "
        "(pass chat_format= to choose another)",
        fallback,
        architecture,
    )
    return fallback, f"no template in the GGUF; {architecture!r} architecture's known format"


def message_text(content: Any) -> str:
    """The text of an OpenAI message ``content`` (a string, or a list of parts)."""
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
                raise ValueError("only text message parts are supported")
        return "".join(parts)
    raise ValueError(f"unsupported message content: {type(content).__name__}")


def render(template: str, messages: Iterable[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
    """Render OpenAI-style ``messages`` (role, content) into one prompt string."""
    pairs = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or "role" not in msg:
            raise ValueError(f"message {i} must be a mapping with a 'role'")
        pairs.append((str(msg["role"]), message_text(msg.get("content"))))
    if not pairs:
        raise ValueError("messages is empty")
    return _core.apply_chat_template(template, pairs, add_generation_prompt)
