"""Prompt caches: saved states of several prompts, kept across calls (RAM) or processes (disk).

llama-cpp-python's names and behaviour: ``Llama.set_cache(cache)``; before a
completion, the cached state whose tokens share the longest prefix with the
prompt is loaded when it covers more of the prompt than the tokens already
evaluated; after the completion, the state is stored under prompt + completion
tokens. The engine's own prefix reuse stays the fast path for one
conversation; a cache keeps several (system prompts, documents) at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

from .sampling import RANDOM_SEED

__all__ = ["BaseLlamaCache", "LlamaCache", "LlamaDiskCache", "LlamaRAMCache", "LlamaState", "longest_token_prefix"]

#: llama-cpp-python's default capacity: 2 GiB of llama.cpp state.
DEFAULT_CAPACITY = 2 << 30


@dataclass(frozen=True)
class LlamaState:
    """A snapshot of sequence 0: its evaluated tokens, llama.cpp's serialized state and
    the seed the next completion draws from (llama-cpp-python restores it too)."""

    input_ids: tuple[int, ...]
    llama_state: bytes
    n_ctx: int
    seed: int = RANDOM_SEED

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def llama_state_size(self) -> int:
        """Bytes of llama.cpp's state."""
        return len(self.llama_state)


def longest_token_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _longest_key(keys: Iterable[tuple[int, ...]], key: Sequence[int]) -> tuple[int, ...] | None:
    best, best_len = None, 0
    for k in keys:
        n = longest_token_prefix(k, key)
        if n > best_len:
            best, best_len = k, n
    return best


class BaseLlamaCache(ABC):
    """Token sequences -> :class:`~sarai_llama.llama.LlamaState`, looked up by longest shared prefix.

    ``capacity_bytes``: most bytes of llama.cpp state kept (default 2 GiB); the
    least recently used entries go first.
    """

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY) -> None:
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be a non-negative integer, not {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes

    @property
    @abstractmethod
    def cache_size(self) -> int:
        """Bytes of state held now."""

    @abstractmethod
    def _keys(self) -> Iterable[tuple[int, ...]]: ...

    def _find_longest_prefix_key(self, key: Sequence[int]) -> tuple[int, ...] | None:
        """The stored key sharing the most leading tokens (at least one) with ``key``."""
        return _longest_key(self._keys(), key)

    def __contains__(self, key: Sequence[int]) -> bool:
        return self._find_longest_prefix_key(tuple(key)) is not None

    @abstractmethod
    def __getitem__(self, key: Sequence[int]) -> LlamaState:
        """The state of the longest-prefix key; ``KeyError`` when no key shares a token."""

    @abstractmethod
    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None: ...


class LlamaRAMCache(BaseLlamaCache):
    """States in this process's memory."""

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY) -> None:
        super().__init__(capacity_bytes)
        self.cache_state: OrderedDict[tuple[int, ...], LlamaState] = OrderedDict()

    @property
    def cache_size(self) -> int:
        return sum(state.llama_state_size for state in self.cache_state.values())

    def _keys(self) -> Iterable[tuple[int, ...]]:
        return list(self.cache_state)

    def __getitem__(self, key: Sequence[int]) -> LlamaState:
        found = self._find_longest_prefix_key(tuple(key))
        if found is None:
            raise KeyError("no cached state shares a prefix with these tokens")
        self.cache_state.move_to_end(found)
        return self.cache_state[found]

    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None:
        key = tuple(int(t) for t in key)
        self.cache_state.pop(key, None)
        self.cache_state[key] = value
        while self.cache_state and self.cache_size > self.capacity_bytes:
            self.cache_state.popitem(last=False)


#: llama-cpp-python's old name for the RAM cache.
LlamaCache = LlamaRAMCache


class LlamaDiskCache(BaseLlamaCache):
    """States in files under ``cache_dir`` (default ``.cache/llama_cache``, as llama-cpp-python),
    shared by every process that opens the same folder.

    One file per entry: a JSON header line (key tokens, the state's tokens, n_ctx,
    seed) and llama.cpp's state bytes. No pickle: a cache folder cannot run code.
    Files are written to a temporary name and renamed, so a reader never sees half
    of one; last use is the file's modification time.
    """

    SUFFIX = ".llamastate"

    def __init__(self, cache_dir: str | os.PathLike[str] = ".cache/llama_cache",
                 capacity_bytes: int = DEFAULT_CAPACITY) -> None:
        super().__init__(capacity_bytes)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def _files(self) -> list[Path]:
        return sorted(self.cache_dir.glob("*" + self.SUFFIX))

    @staticmethod
    def _header(path: Path) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as f:
                return dict(json.loads(f.readline()))
        except (OSError, ValueError):
            return None  # removed by another process meanwhile, or not ours

    def _index(self) -> dict[tuple[int, ...], Path]:
        out = {}
        for path in self._files():
            head = self._header(path)
            if head is not None and isinstance(head.get("key"), list):
                out[tuple(head["key"])] = path
        return out

    def _keys(self) -> Iterable[tuple[int, ...]]:
        return list(self._index())

    @property
    def cache_size(self) -> int:
        total = 0
        for path in self._files():
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total

    def __getitem__(self, key: Sequence[int]) -> LlamaState:
        index = self._index()
        best = _longest_key(index, key)
        if best is None:
            raise KeyError("no cached state shares a prefix with these tokens")
        path = index[best]
        try:
            with open(path, "rb") as f:
                head = json.loads(f.readline())
                data = f.read()
            os.utime(path)  # most recently used
        except (OSError, ValueError) as exc:
            raise KeyError(f"cached state {path.name} could not be read: {exc}") from exc
        return LlamaState(tuple(head["input_ids"]), data, int(head["n_ctx"]), int(head["seed"]))

    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None:
        key = [int(t) for t in key]
        name = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32] + self.SUFFIX
        head = {"key": key, "input_ids": list(value.input_ids), "n_ctx": value.n_ctx, "seed": value.seed}
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(head).encode() + b"\n")
                f.write(value.llama_state)
            os.replace(tmp, self.cache_dir / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._evict()

    def _evict(self) -> None:
        def mtime(p: Path) -> float:
            try:
                return p.stat().st_mtime
            except OSError:
                return 0.0

        files = sorted(self._files(), key=mtime)
        while files and self.cache_size > self.capacity_bytes:
            files.pop(0).unlink(missing_ok=True)


# ----------------------------------------------------------------- used by Llama
def restore(cache: BaseLlamaCache, evaluated: Sequence[int], prompt: Sequence[int]) -> LlamaState | None:
    """The cached state for ``prompt`` when it covers more of it than the tokens already
    ``evaluated``, else None."""
    try:
        state = cache[prompt]
    except KeyError:
        return None
    if longest_token_prefix(state.input_ids, prompt) > longest_token_prefix(evaluated, prompt):
        return state
    return None


def store_after(cache: BaseLlamaCache, prompt: Sequence[int], pieces: Iterator[Any],
                save: Callable[[], LlamaState]) -> Iterator[Any]:
    """Pass ``pieces`` through; once the completion has ended, store ``save()`` under
    prompt + completion tokens (an abandoned stream stores nothing)."""
    generated: list[int] = []
    for piece in pieces:
        generated.extend(piece.tokens)
        yield piece
    cache[list(prompt) + generated] = save()
