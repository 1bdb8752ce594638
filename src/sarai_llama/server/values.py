"""How a setting's text becomes its value: one parser per kind, each error saying what it takes.

Every parser takes the text of a flag or a ``SARAI_*`` variable (or a ``models.toml``
value, as text) and returns the value or raises ``ValueError`` with a message that
names what is accepted; :data:`~.settings.OPTIONS` pairs each setting with one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["FLASH_ATTN_KEYWORD", "int_in", "keys", "model_pairs", "one_of", "parse_bool", "parse_cache_ram",
           "parse_flash_attn", "parse_kv_type", "parse_memory", "parse_reasoning_format", "parse_step_budget",
           "parse_threads", "positive"]


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (1/0, true/false, yes/no, on/off), not {text!r}")


def parse_threads(text: str) -> str | int:
    value = str(text).strip().lower()
    if value in ("auto", "tuned"):
        return value
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"threads must be 'auto', 'tuned' or a positive integer, not {text!r}") from None
    if n < 1:
        raise ValueError(f"threads must be 'auto', 'tuned' or a positive integer, not {text!r}")
    return n


def parse_step_budget(text: str) -> float:
    """``off`` (or 0): today's scheduling, prompts take the whole batch; else a target step time in ms."""
    value = str(text).strip().lower()
    if value == "off":
        return 0.0
    try:
        ms = float(value)
    except ValueError:
        raise ValueError(f"step budget must be 'off' or a number of ms >= 0, not {text!r}") from None
    if not ms >= 0 or ms == float("inf"):
        raise ValueError(f"step budget must be 'off' or a number of ms >= 0, not {text!r}")
    return ms


def one_of(what: str, names: Iterable[str], text: str) -> str:
    """``text`` (trimmed, lower case) if it is one of ``names``; else a ValueError listing them."""
    value, names = str(text).strip().lower(), list(names)
    if value not in names:
        raise ValueError(f"{what} must be one of {', '.join(names)}, not {text!r}")
    return value


def parse_kv_type(text: str) -> str:
    """A KV-cache type name, as llama-server's ``-ctk`` / ``-ctv`` take it (f16, q8_0, ...)."""
    from ..context_config import KV_TYPES

    return one_of("KV cache type", KV_TYPES, text)


#: A ``--flash-attn`` value as ``ContextConfig.from_keywords``' ``flash_attn``.
FLASH_ATTN_KEYWORD: dict[str, bool | None] = {"on": True, "off": False, "auto": None}


def parse_flash_attn(text: str) -> str:
    """``on``, ``off`` or ``auto`` (llama.cpp decides per model and machine), as llama-server's ``-fa``."""
    value = str(text).strip().lower()
    value = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}.get(value, value)
    if value not in FLASH_ATTN_KEYWORD:
        raise ValueError(f"flash attention must be on, off or auto, not {text!r}")
    return value


def parse_reasoning_format(text: str) -> str:
    """One of ``chat_template.REASONING_FORMATS``, as llama-server's ``--reasoning-format``."""
    from ..chat_template import REASONING_FORMATS

    return one_of("reasoning format", REASONING_FORMATS, text)


def parse_cache_ram(text: str) -> str | int:
    """``auto`` (what the pod's memory limit leaves), or MiB as llama-server's ``--cache-ram``: 0 turns the
    state cache off, -1 sets no limit."""
    value = str(text).strip().lower()
    if value == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"cache RAM must be 'auto' or a number of MiB (0: off, -1: no limit), not {text!r}") from None
    if n < -1:
        raise ValueError(f"cache RAM must be 'auto' or a number of MiB (0: off, -1: no limit), not {text!r}")
    return n


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(str(text).strip())
        except ValueError:
            n = lo - 1
        if not lo <= n <= hi:
            raise ValueError(f"must be an integer in [{lo}, {hi}], not {text!r}")
        return n

    parse.__name__ = "int"
    return parse


def positive(kind: Callable[[str], Any], lo: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < lo:
            raise ValueError(f"must be >= {lo}, not {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def keys(text: str) -> list[str]:
    # A list in one variable (SARAI_API_KEY=k1,k2): key rotation without a restart of every client.
    return [k.strip() for k in str(text).split(",") if k.strip()]


def model_pairs(text: str) -> list[tuple[str, str]]:
    """``NAME=PATH[,NAME=PATH...]`` as (name, path) pairs."""
    pairs = []
    for item in (i.strip() for i in str(text).split(",")):
        name, eq, path = item.partition("=")
        if not item:
            continue
        if not eq or not name.strip() or not path.strip():
            raise ValueError(f"a model is NAME=PATH, not {item!r}")
        pairs.append((name.strip(), path.strip()))
    return pairs


def parse_memory(text: str) -> str | int:
    """``auto`` or a number of MiB (> 0)."""
    value = str(text).strip().lower()
    if value == "auto":
        return "auto"
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"memory must be 'auto' or a number of MiB (> 0), not {text!r}")
    return int(value)
