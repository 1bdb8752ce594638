"""``Llama``'s requests: each is read, and so driven, by the thread that asked for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from .engine import Engine, Handle, Piece, Request

__all__ = ["InlineRuns"]


class InlineRuns:
    """The running requests of one ``Llama`` and the thread reading each.

    ``n_seq_max``: the engine's sequences. A thread whose own unfinished streams
    already hold all of them would wait for itself forever: its next request is a
    ``RuntimeError`` instead.
    """

    def __init__(self, n_seq_max: int) -> None:
        self.n_seq_max = n_seq_max
        self._mine: dict[Handle, int] = {}

    def run(self, engine: Engine, request: Request) -> Iterator[Piece]:
        """Submit ``request`` and yield its pieces (closing the iterator ends the request)."""
        me = threading.get_ident()
        if sum(1 for t in list(self._mine.values()) if t == me) >= self.n_seq_max:
            raise RuntimeError("this Llama is busy with an unfinished generation in this thread (finish or close "
                               "the stream first, or create the Llama with a larger n_seq_max)")
        handle = engine.submit(request)
        self._mine[handle] = me
        try:
            yield from handle
        finally:
            self._mine.pop(handle, None)

    def cancel(self) -> None:
        """Cancel every running request (each ends at its next token, finish_reason "cancelled")."""
        for handle in list(self._mine):
            handle.cancel()
