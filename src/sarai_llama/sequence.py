"""One of the engine's sequences while no request runs on it: its cached tokens, an
evaluation after them, its saved KV state (:class:`IdleSequence`, from ``Engine.sequence``).

Requests reuse a sequence's cached tokens as a prompt prefix; these calls read and
write them directly, which is what llama-cpp-python's single-user API does on
sequence 0 (``Llama.eval``, ``save_state`` / ``load_state``: :mod:`~sarai_llama.logits`)
and what ``tools/bench_state_cache.py`` measures. Each call that touches the KV cache
takes the engine's step lock, so it never runs inside a step.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["IdleSequence"]


class IdleSequence:
    """Sequence ``seq`` of a ``_core.Engine`` (``core``), under the engine's ``step_lock``.

    The sequence must be idle (no request decoding on it) for :meth:`eval`, :meth:`state`
    and :meth:`set_state`; the core raises ``ValueError`` otherwise.
    """

    def __init__(self, core: Any, step_lock: threading.Lock, seq: int = 0) -> None:
        self._core, self._lock, self.seq = core, step_lock, seq

    def cached(self) -> list[int]:
        """Tokens whose KV the sequence keeps for prefix reuse."""
        return list(self._core.cached(self.seq))

    def eval(self, tokens: list[int]) -> list[float]:
        """Evaluate ``tokens`` after the cached ones; returns the logits after the last one
        (``n_vocab`` floats)."""
        with self._lock:
            return list(self._core.eval(self.seq, tokens))

    def state(self) -> tuple[list[int], bytes]:
        """(cached tokens, llama.cpp's saved KV state of the sequence), read together."""
        with self._lock:
            return list(self._core.cached(self.seq)), bytes(self._core.seq_state(self.seq))

    def serves_from(self) -> int:
        """The shortest prefix of the cached tokens the sequence's state can serve (1; more on
        sliding-window or recurrent memories; 0: none)."""
        with self._lock:
            return int(self._core.seq_serves_from(self.seq))

    def set_state(self, data: bytes, tokens: list[int]) -> None:
        """Make ``data`` (a :meth:`state`'s bytes) and ``tokens`` the sequence's; ``ValueError``
        for a state of another model or KV layout, or one whose window is gone."""
        with self._lock:
            self._core.set_seq_state(self.seq, data, tokens)
