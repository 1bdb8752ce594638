"""Server-sent events: one writer for every streamed answer.

Each choice is an async source of JSON objects (``None``: a ping is due); the
writer merges the sources of ``n`` choices, writes each object as a ``data:``
event and each ping as a comment, then what the protocol sends last. An error
after the 200 went out can only travel inside the stream, as one more event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from .errors import APIError, internal

__all__ = ["PING", "EventStream", "event", "merge", "write"]

logger = logging.getLogger("sarai_llama.server")

#: A comment line: keeps proxies and clients from timing out on a quiet stream.
PING = b": ping\n\n"


def event(obj: Any) -> bytes:
    """One ``data:`` event holding ``obj`` as compact JSON (UTF-8, not escaped)."""
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


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


async def write(sources: list[AsyncIterator[Any]], last: Callable[[], list[bytes]]) -> AsyncIterator[bytes]:
    """The stream's bytes: every source's objects as events, pings as comments, then ``last()``
    (called once the sources are done). An error ends the stream with an error event."""
    try:
        async for item in (sources[0] if len(sources) == 1 else merge(sources)):
            yield PING if item is None else event(item)
        for tail in last():
            yield tail
    except APIError as exc:
        yield event(exc.body())
    except Exception as exc:
        logger.exception("stream failed")
        yield event(internal(exc).body())


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
