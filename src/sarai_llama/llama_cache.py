"""Prompt caches for ``Llama``: llama-cpp-python's ``LlamaRAMCache`` and ``LlamaDiskCache``
as views on the engine's state cache (``_core.StateCache``, :mod:`state_cache`), the
store ``sarai-llama serve --cache-ram/--cache-dir`` uses too.

``Llama.set_cache(cache)`` sets the view's store on the engine: a sequence about to be
taken by another request leaves its state there, and a request restores the longest
cached prefix of its prompt (every call: completions, chat, ``create_completions``).
On top, llama-cpp-python's behaviour: before a completion or chat completion, the
cached state sharing the longest prefix with the prompt is loaded with
``Llama.load_state`` when it covers more of the prompt than the tokens already
evaluated; after it, ``Llama.save_state()`` is stored.

Where this differs from llama-cpp-python, and why:

- A state is kept under the tokens it holds. The key given to ``cache[key] = state``
  must agree with them (one a prefix of the other), else ``ValueError``: a state
  kept under other tokens would be loaded for a prompt it does not hold.
- Seeds are not kept: a cache hit leaves the object's seed as it is, so what a
  completion draws does not depend on whether the cache hit (llama-cpp-python
  restores the writer's seed). ``save_state``/``load_state`` keep the seed.
- A cache belongs to one model file and KV layout (``state_cache.identity``), bound
  by the first ``set_cache``; ``set_cache`` on a ``Llama`` of another is a ``ValueError``.
- ``LlamaDiskCache`` files are the state cache's (``serve --cache-dir``'s format:
  version, model identity, checksum; no pickle, so a cache folder cannot run code):
  a folder can be shared with the server; files of another model or damaged ones
  are ignored with a warning. The folder is indexed when the cache is bound to a
  model; files other processes write later are seen by the next cache on it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _core, state_cache

__all__ = ["BaseLlamaCache", "LlamaCache", "LlamaDiskCache", "LlamaRAMCache", "LlamaState", "longest_token_prefix"]

logger = logging.getLogger("sarai_llama")

#: llama-cpp-python's default capacity: 2 GiB of llama.cpp state.
DEFAULT_CAPACITY = 2 << 30


@dataclass(frozen=True)
class LlamaState:
    """A snapshot of sequence 0: its evaluated tokens, llama.cpp's serialized state, the
    context size of the object that saved it (0: not known, a state from a cache), the
    seed the next completion draws from (None: a cache's state, which keeps none) and
    the shortest prefix of ``input_ids`` it can serve (more than 1 on sliding-window or
    recurrent memories, whose old positions are gone or cannot be cut)."""

    input_ids: tuple[int, ...]
    llama_state: bytes
    n_ctx: int = 0
    seed: int | None = None
    min_prefix: int = 1

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


def _check_capacity(capacity_bytes: Any) -> int:
    if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes < 0:
        raise ValueError(f"capacity_bytes must be a non-negative integer, not {capacity_bytes!r}")
    return capacity_bytes


class BaseLlamaCache(ABC):
    """Token sequences -> :class:`LlamaState`, looked up by longest shared prefix
    (llama-cpp-python's interface; a subclass of the user's own works with ``Llama``
    through it: loaded before and stored after each completion).

    ``capacity_bytes``: most bytes of llama.cpp state kept (default 2 GiB); the
    least recently used entries go first.
    """

    #: the engine's store behind a view (``_core.StateCache``); None for other caches
    store: Any = None

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY) -> None:
        self.capacity_bytes = _check_capacity(capacity_bytes)

    @property
    @abstractmethod
    def cache_size(self) -> int:
        """Bytes of state held now."""

    def _find_longest_prefix_key(self, key: Sequence[int]) -> tuple[int, ...] | None:
        """The stored key sharing the most leading tokens (at least one) with ``key``."""
        return None

    def __contains__(self, key: Sequence[int]) -> bool:
        return self._find_longest_prefix_key(tuple(key)) is not None

    @abstractmethod
    def __getitem__(self, key: Sequence[int]) -> LlamaState:
        """The state of the longest-prefix key; ``KeyError`` when no key shares a token."""

    @abstractmethod
    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None: ...


class StateCacheView(BaseLlamaCache):
    """A :class:`BaseLlamaCache` on a ``_core.StateCache`` (``store``): the entries are its
    states, keyed by the tokens they hold; a lookup gives the state serving the longest
    prefix of the key."""

    store: Any

    def _find_longest_prefix_key(self, key: Sequence[int]) -> tuple[int, ...] | None:
        n, tokens = self.store.peek([int(t) for t in key], len(key))
        return tuple(tokens) if n else None

    def __getitem__(self, key: Sequence[int]) -> LlamaState:
        found = self.store.find([int(t) for t in key], len(key), 0)
        if found is None:
            raise KeyError("no cached state shares a prefix with these tokens")
        _, tokens, data, min_prefix = found
        return LlamaState(tuple(tokens), bytes(data), min_prefix=int(min_prefix))

    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None:
        key, tokens = [int(t) for t in key], [int(t) for t in value.input_ids]
        n = min(len(key), len(tokens))
        if not tokens or key[:n] != tokens[:n]:
            raise ValueError("a state is kept under the tokens it holds: the key must agree with its input_ids "
                             "(one a prefix of the other)")
        self.store.put(tokens, value.llama_state, value.min_prefix)

    def take_warnings(self) -> list[str]:
        """What the store refused since the last call (damaged or foreign disk files, failed writes)."""
        return list(self.store.take_warnings())


class LlamaRAMCache(StateCacheView):
    """States in this process's memory, up to ``capacity_bytes`` (least recently used go first)."""

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY) -> None:
        self.store = _core.StateCache(_check_capacity(capacity_bytes), "")
        super().__init__(capacity_bytes)

    @property  # type: ignore[override]
    def capacity_bytes(self) -> int:
        return int(self.store.budget)

    @capacity_bytes.setter
    def capacity_bytes(self, value: int) -> None:
        self.store.budget = _check_capacity(value)

    @property
    def cache_size(self) -> int:
        return int(self.store.stats()["bytes"])


#: llama-cpp-python's old name for the RAM cache.
LlamaCache = LlamaRAMCache


class LlamaDiskCache(StateCacheView):
    """States in files under ``cache_dir`` (default ``.cache/llama_cache``, as
    llama-cpp-python), up to ``capacity_bytes`` of files (least recently used go first);
    nothing is kept in RAM. One file per state, written to a temporary name and renamed,
    so a reader never sees half of one (the format of ``serve --cache-dir``)."""

    def __init__(self, cache_dir: str | Path = ".cache/llama_cache", capacity_bytes: int = DEFAULT_CAPACITY) -> None:
        self.cache_dir = Path(cache_dir)
        self.store = _core.StateCache(0, "")
        super().__init__(capacity_bytes)

    @property  # type: ignore[override]
    def capacity_bytes(self) -> int:
        return int(self.store.disk_budget)

    @capacity_bytes.setter
    def capacity_bytes(self, value: int) -> None:
        self.store.set_disk(str(self.cache_dir), _check_capacity(value))

    @property
    def cache_size(self) -> int:
        return int(self.store.stats()["disk_bytes"])


# ----------------------------------------------------------------- used by Llama
def attach(cache: BaseLlamaCache | None, engine: Any, model_path: str, kv_layout: str) -> BaseLlamaCache | None:
    """``Llama.set_cache``: bind a view's store to this model (``ValueError`` for a cache of
    another) and set it on ``engine`` (None: the engine keeps no states)."""
    store = cache.store if cache is not None else None
    if store is not None:
        store.bind(state_cache.identity(model_path, kv_layout))
        for warning in store.take_warnings():
            logger.warning("%s", warning)
    engine.state_cache = store
    return cache


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


def store_after(cache: BaseLlamaCache | None, prompt: Sequence[int], pieces: Iterator[Any],
                save: Callable[[], LlamaState]) -> Iterator[Any]:
    """Pass ``pieces`` through; once the completion has ended, store ``save()`` under
    prompt + completion tokens when it holds a prefix of them (an abandoned stream stores
    nothing). No cache: ``pieces``."""
    if cache is None:
        return pieces
    return _store_after(cache, list(prompt), pieces, save)


def _store_after(cache: BaseLlamaCache, key: list[int], pieces: Iterator[Any],
                 save: Callable[[], LlamaState]) -> Iterator[Any]:
    for piece in pieces:
        key.extend(piece.tokens)
        yield piece
    state = save()
    if state.input_ids and longest_token_prefix(state.input_ids, key) == min(len(key), state.n_tokens):
        cache[key] = state
