"""Protocol-neutral parts of a chat exchange that Anthropic Messages and OpenAI Responses share.

An answer, as the chat template's parser reads it (OpenAI ``delta`` dicts from
:class:`~sarai_llama.chat_completion.ChatDeltas`), is a sequence of blocks: text,
reasoning and tool calls, each opened, grown and closed in order. Anthropic
calls them content blocks, the Responses API output items; :class:`Blocks`
tracks them once and each protocol writes its own events for them. Requests go
the other way: :func:`text_content` turns text parts into an OpenAI message's
``content``, which the chat template reads (common joins several parts).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Block", "Blocks", "Event", "new_id", "text_content"]


def new_id(prefix: str) -> str:
    """A fresh id in the protocol's style (``msg_...``, ``toolu_...``, ``resp_...``)."""
    return prefix + uuid.uuid4().hex[:24]


def text_content(texts: list[str | dict[str, Any]]) -> str | list[dict[str, Any]]:
    """An OpenAI message ``content`` from text parts (and image parts: ``images.image_part``): one
    string, or parts for several."""
    if len(texts) == 1 and isinstance(texts[0], str):
        return texts[0]
    return [{"type": "text", "text": t} if isinstance(t, str) else t for t in texts]


@dataclass
class Block:
    """One block of an answer. ``text``: the content, the reasoning, or a call's JSON arguments
    so far; ``index``: its place among the answer's blocks (-1 while a call waits for its arguments)."""

    kind: Literal["text", "reasoning", "tool_call"]
    index: int = -1
    text: str = ""
    call_id: str = ""
    name: str = ""


#: ("start", block, ""), ("delta", block, the text added) or ("stop", block, "").
Event = tuple[str, Block, str]


class Blocks:
    """An answer's blocks from its deltas, as events a protocol turns into its own.

    Text and reasoning start a new block whenever the kind changes. A tool call
    starts when its first arguments arrive: the formats write the name before the
    arguments, and the parser keeps the id it first gave a call (its own, or one
    it made up while the model's was still to come), so both are final then. A
    call without an id gets ``make_id()``. ``blocks`` holds every started block.
    """

    def __init__(self, make_id: Callable[[], str]) -> None:
        self.make_id = make_id
        self.blocks: list[Block] = []
        self._open: Block | None = None
        self._calls: dict[int, Block] = {}

    @property
    def has_tool_calls(self) -> bool:
        return bool(self._calls)

    def feed(self, deltas: Iterable[Mapping[str, Any]]) -> list[Event]:
        out: list[Event] = []
        for delta in deltas:
            for key, kind in (("reasoning_content", "reasoning"), ("content", "text")):
                text = delta.get(key)
                if text:
                    if self._open is None or self._open.kind != kind:
                        out += self._start(Block(kind))
                    out += self._grow(self._open, text)  # type: ignore[arg-type]
            for call in delta.get("tool_calls") or ():
                block = self._calls.setdefault(int(call["index"]), Block("tool_call"))
                fn = call.get("function") or {}
                block.call_id = call.get("id") or block.call_id
                block.name = fn.get("name") or block.name  # the parser sends the whole name when it changes
                args = fn.get("arguments") or ""
                if args:
                    if block.index < 0:
                        out += self._start(block)
                    out += self._grow(block, args)
        return out

    def close(self) -> list[Event]:
        """The end of the answer: calls that never got arguments start, the open block stops."""
        out: list[Event] = []
        for i in sorted(self._calls):
            if self._calls[i].index < 0:
                out += self._start(self._calls[i])
        if self._open is not None:
            out.append(("stop", self._open, ""))
            self._open = None
        return out

    def _start(self, block: Block) -> list[Event]:
        out: list[Event] = []
        if self._open is not None:
            out.append(("stop", self._open, ""))
        if block.kind == "tool_call" and not block.call_id:
            block.call_id = self.make_id()
        block.index = len(self.blocks)
        self.blocks.append(block)
        self._open = block
        out.append(("start", block, ""))
        return out

    def _grow(self, block: Block, text: str) -> list[Event]:
        block.text += text
        # A call's arguments after another block came between (the formats write a call
        # whole) stay in its text, for the final answer, without a delta on a closed block.
        return [("delta", block, text)] if block is self._open else []
