"""Server-sent events: one writer for every streamed answer.

Each choice is an async source of JSON objects (``None``: a ping is due); the
writer merges the sources of ``n`` choices, writes each object as a ``data:``
event (a ``(name, object)`` pair as a named ``event:``, as Anthropic's and the
Responses API's streams are) and each ping as the protocol's ping, then what the
protocol sends last. An error after the 200 went out can only travel inside the
stream, as one more event in the protocol's shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Union

from fastapi.responses import StreamingResponse

from .errors import APIError, internal

__all__ = ["PING", "EventStream", "Item", "event", "merge", "openai_error", "write"]

logger = logging.getLogger("sarai_llama.server")

#: A comment line: keeps proxies and clients from timing out on a quiet stream.
PING = b": ping\n\n"


#: What a source yields: an object (a ``data:`` event), a ``(name, object)`` pair (a named
#: event), or None (a ping is due).
Item = Union[dict[str, Any], tuple[str, dict[str, Any]], None]


def event(obj: Any, name: str | None = None) -> bytes:
    """One ``data:`` event holding ``obj`` as compact JSON (UTF-8, not escaped), named ``name`` if given."""
    data = b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"
    return b"event: " + name.encode("utf-8") + b"\n" + data if name else data


def openai_error(exc: APIError) -> bytes:
    """An error inside an OpenAI stream: one ``data:`` event with OpenAI's error body."""
    return event(exc.body())


async def merge(sources: list[AsyncIterator[Any]]) -> AsyncIterator[Any]:
    """Items of several async iterators as they come (``n`` > 1 choices in one stream)."""
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def pump(src: AsyncIterator[Any]) -> None:
        try:
            async for item in src:
                await queue.put(("item", item))
            await queue.put(("end", None))
        except Exception as exc:  # handed to the reader, which stops the stream with it
            await queue.put(("error", exc))

    tasks = [asyncio.get_running_loop().create_task(pump(s)) for s in sources]
    try:
        open_ = len(tasks)
        while open_:
            kind, item = await queue.get()
            if kind == "item":
                yield item
            elif kind == "end":
                open_ -= 1
            else:
                raise item
    finally:
        for t in tasks:
            t.cancel()


async def write(sources: list[AsyncIterator[Item]], last: Callable[[], list[bytes]] = list, *, ping: bytes = PING,
                error: Callable[[APIError], bytes] = openai_error) -> AsyncIterator[bytes]:
    """The stream's bytes: every source's items as events, pings as ``ping``, then ``last()``
    (called once the sources are done). An error ends the stream with ``error(exc)``."""
    try:
        async for item in (sources[0] if len(sources) == 1 else merge(sources)):
            if item is None:
                yield ping
            elif isinstance(item, tuple):
                yield event(item[1], item[0])
            else:
                yield event(item)
        for tail in last():
            yield tail
    except APIError as exc:
        yield error(exc)
    except Exception as exc:
        logger.exception("stream failed")
        yield error(internal(exc))


class EventStream(StreamingResponse):
    """An SSE response that calls ``on_close`` however it ends: a client that hangs up before
    the first chunk never starts the body generator, whose own ``finally`` would then never run."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()
