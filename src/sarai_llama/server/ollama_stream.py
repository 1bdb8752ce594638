"""Ollama's answers: one generation's objects, whole or as an NDJSON stream.

:class:`Reply` turns a run's pieces into Ollama's chat (``message``) or generate
(``response``) objects; the last one has ``done: true``, ``done_reason`` and the
counts and durations (nanoseconds). :class:`NdjsonStream` writes them one JSON
object a line, as Ollama streams (no keep-alive lines: clients parse every line).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from ..chat_completion import ChatDeltas
from .errors import APIError, internal
from .ollama_schemas import error_reply, now
from .runs import Run, stream

__all__ = ["NdjsonStream", "Reply", "ns", "ollama_message"]


def ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


class Reply:
    """One generation's Ollama objects: ``key`` is "message" (chat) or "response" (generate)."""

    def __init__(self, model: str, key: str, run: Run, t0: float) -> None:
        self.model, self.key, self.run, self.t0 = model, key, run, t0
        self.output = run.prepared.output()

    def _object(self, message: dict[str, Any], done: bool) -> dict[str, Any]:
        if self.key == "message":
            body: dict[str, Any] = {"message": {"role": "assistant", "content": message.get("content") or "",
                                                **{k: v for k, v in message.items() if k in ("thinking", "tool_calls")}}}
        else:
            body = {"response": message.get("content") or "",
                    **({"thinking": message["thinking"]} if message.get("thinking") else {})}
        return {"model": self.model, "created_at": now(), **body, "done": done}

    def final(self, message: dict[str, Any], finish: str | None) -> dict[str, Any]:
        """The last object: done, why, and the counts and durations (nanoseconds)."""
        end, job, run = time.monotonic(), self.run.job, self.run
        first = job.t_first if job.t_first is not None else end
        return {**self._object(message, True), "done_reason": "length" if finish == "length" else "stop",
                "total_duration": ns(end - self.t0), "load_duration": 0,
                "prompt_eval_count": run.prepared.n_prompt, "prompt_eval_duration": ns(first - job.t_submit),
                "eval_count": run.usage["completion_tokens"], "eval_duration": ns(end - first)}

    def answer(self, text: str, finish: str | None) -> dict[str, Any]:
        """The non-streamed answer: the whole message in the final object."""
        if self.output is None:
            return self.final({"content": text}, finish)
        self.output.update(text, partial=False)
        return self.final(ollama_message(self.output.message()), finish)

    async def lines(self) -> AsyncIterator[dict[str, Any]]:
        """The stream: text and thinking as they come; tool calls whole, once the answer ends."""
        deltas = ChatDeltas(self.output) if self.output is not None else None
        finish = None
        async for piece in stream(self.run):
            if piece is None:
                continue  # NDJSON has no keep-alive line
            parts = deltas.feed(piece) if deltas is not None else [{"content": piece.text}]
            text = "".join(d.get("content") or "" for d in parts)
            thought = "".join(d.get("reasoning_content") or "" for d in parts)
            if text or thought:
                yield self._object({"content": text, **({"thinking": thought} if thought else {})}, False)
            finish = piece.finish_reason if piece.finish_reason is not None else finish
        calls = ollama_message(self.output.message()).get("tool_calls") if self.output is not None else None
        if calls:
            yield self._object({"tool_calls": calls}, False)
        yield self.final({}, finish)


def ollama_message(msg: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI assistant message in Ollama's shape: ``thinking``, calls with arguments as an object."""
    out: dict[str, Any] = {"content": msg.get("content") or ""}
    if msg.get("reasoning_content"):
        out["thinking"] = msg["reasoning_content"]
    calls = []
    for call in msg.get("tool_calls") or ():
        fn = call["function"]
        try:
            args = json.loads(fn["arguments"]) if fn["arguments"] else {}
        except ValueError:  # cut by num_predict mid-call
            args = {}
        calls.append({"function": {"name": fn["name"], "arguments": args if isinstance(args, dict) else {}}})
    if calls:
        out["tool_calls"] = calls
    return out


class NdjsonStream(StreamingResponse):
    """Ollama's stream: one JSON object a line; an error after the 200 is one ``{"error"}`` line.
    ``on_close`` runs however it ends (a client gone before the first line included)."""

    def __init__(self, objects: AsyncIterator[dict[str, Any]], on_close: Callable[[], None]) -> None:
        super().__init__(self._lines(objects), media_type="application/x-ndjson")
        self.on_close = on_close

    @staticmethod
    async def _lines(objects: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
        try:
            async for obj in objects:
                yield json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        except APIError as exc:
            yield json.dumps(error_reply(exc)[1]).encode("utf-8") + b"\n"
        except Exception as exc:
            yield json.dumps(error_reply(internal(exc))[1]).encode("utf-8") + b"\n"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()
