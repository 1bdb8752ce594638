"""Stop strings over streamed text, as a pure object (no model, no I/O).

Text arrives piece by piece; a stop string may straddle pieces. The matcher
releases only text that can no longer be the start of a stop string, and cuts
at the first stop string found, so a stream never shows the stop string or a
prefix of it that later turns out to be one.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["StopMatcher", "normalize_stops", "stop_prefix_len"]


def normalize_stops(stop: str | Iterable[str] | None) -> list[str]:
    """llama-cpp-python's ``stop`` argument as a list of non-empty strings."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    out = []
    for s in stop:
        if not isinstance(s, str):
            raise ValueError(f"stop strings must be str, not {type(s).__name__}")
        if s:
            out.append(s)
    return out


def stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


class StopMatcher:
    """Feed text pieces; get back what may be shown now, and whether a stop string ended it.

    >>> m = StopMatcher(["\\n\\n"])
    >>> m.feed("a\\n"), m.feed("\\nb")
    (('a', False), ('', True))
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self._longest = max((len(s) for s in stops), default=0)
        self.text = ""  # all text so far (cut at the stop string once one is hit)
        self.emitted = 0  # characters of ``text`` already released
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the text (the earliest found)

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add ``piece``; return (text safe to release now, whether a stop string was hit)."""
        if self.stopped:
            return "", True
        self.text += piece
        if self.stops:
            start = max(0, self.emitted - self._longest)
            hits = [(i, s) for i, s in ((self.text.find(s, start), s) for s in self.stops) if i >= 0]
            if hits:
                at, self.matched = min(hits, key=lambda hit: hit[0])
                self.text = self.text[:at]
                self.stopped = True
                return self.release_all(), True
        safe = len(self.text) - stop_prefix_len(self.text, self.stops)
        if safe <= self.emitted:
            return "", False
        out = self.text[self.emitted : safe]
        self.emitted = safe
        return out, False

    def release_all(self) -> str:
        """Everything not yet released (at the end of a generation: a held-back tail is text after all)."""
        out = self.text[self.emitted :]
        self.emitted = len(self.text)
        return out
