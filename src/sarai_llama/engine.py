"""Many requests on one model: submit / stream / cancel over the C++ engine.

``_core.Engine`` decodes N sequences in one batch per ``step()`` (the GIL is
released for the whole step) and returns plain events. This module turns a
request's events into what its reader sees: text with stop strings cut
(:mod:`stops`), logprob records, usage, a finish reason.

Two ways to drive it, one rule: **one thread steps at a time** (a lock).

* Inline (``Llama``): whoever waits for output steps the engine itself. Two
  threads streaming from the same ``Llama`` therefore share batches: each
  step advances both, and each thread reads its own request's pieces. No
  lock is held while a reader's generator is paused at a ``yield``.
* A scheduler thread of the caller's (the server's ``server.scheduler``), which
  declares itself with :meth:`Engine.drive_from_this_thread` and steps while
  there is work; readers then only wait for its steps.

Events are dispatched in the stepping thread, so stop strings are found there
and the request released at once: the token after a stop is never decoded.
A sequence between requests (its cached tokens, eval, saved state) is
:meth:`Engine.sequence` (:mod:`~sarai_llama.sequence`).
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import _core
from ._core import EventKind
from .context_config import ContextConfig
from .engine_io import Collected, EngineError, Piece, Request, TokenLogprob
from .llama_speculative import Speculation, check_draft_limits
from .sampling import RANDOM_SEED
from .sequence import IdleSequence
from .stops import StopMatcher

# The records are engine_io's; named here too, where the engine's users have always found them.
__all__ = ["Collected", "Engine", "EngineError", "Handle", "Piece", "Request", "TokenLogprob", "run_all"]


class Handle:
    """A submitted request: iterate it for its pieces, ``cancel()`` it from anywhere."""

    def __init__(self, engine: Engine, request: Request, rid: int) -> None:
        self.engine = engine
        self.request = request
        self.id = rid
        self.tokens: list[int] = []  # generated so far
        self.n_reused = 0
        self.finish_reason: str | None = None
        self.error: str | None = None
        #: Draft tokens verified / accepted so far, and at the end why the request did not
        #: speculate ("" when it could; see ``Engine.speculation``).
        self.drafted = self.draft_accepted = 0
        self.speculation = ""
        self._stops = StopMatcher(request.stop)
        self._pieces: collections.deque[Piece] = collections.deque()
        self._new_tokens: list[int] = []
        self._done = threading.Event()
        self._listener: Callable[[Handle], None] | None = None

    # ----------------------------------------------------------- reader side
    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """End this request at the next step (finish_reason "cancelled"); from any thread."""
        self.engine._cancel(self)

    def set_listener(self, fn: Callable[[Handle], None] | None) -> None:
        """Call ``fn(handle)`` (in the stepping thread) whenever pieces arrive; for async readers."""
        self._listener = fn
        if fn is not None and (self._pieces or self.done):
            fn(self)

    def take(self) -> list[Piece]:
        """The pieces that arrived since the last call (never blocks)."""
        out = []
        while self._pieces:
            out.append(self._pieces.popleft())
        return out

    def __iter__(self) -> Iterator[Piece]:
        """The pieces in order; drives the engine inline when no scheduler thread does.

        Leaving the loop early (``break``, ``close()``, garbage collection)
        cancels the request, so an abandoned stream costs no more decoding.
        """
        finished = False
        try:
            while True:
                while self._pieces:
                    piece = self._pieces.popleft()
                    if piece.finish_reason is not None:
                        finished = True
                    yield piece
                    if finished:
                        return
                if self.error is not None and not self._pieces:
                    finished = True
                    raise EngineError(self.error)
                self.engine._advance(self)
        finally:
            if not finished:
                self.cancel()

    # ----------------------------------------------------------- stepping side
    def _push(self, text: str, lp: list[TokenLogprob] | None, finish: str | None) -> None:
        if text or lp or finish is not None:
            self._pieces.append(Piece(text, self._new_tokens, lp, finish, len(self.request.prompt), len(self.tokens),
                                      self.n_reused, self._stops.matched if finish is not None else None))
            self._new_tokens = []

    def _finish(self, reason: str | None, tail: str = "") -> None:
        if not self._stops.stopped and tail:
            self._stops.text += tail
        self.finish_reason = reason or "stop"
        self._push(self._stops.release_all(), None, self.finish_reason)
        self._done.set()


class Engine:
    """``n_seq_max`` sequences over one llama.cpp context (see the module docstring).

    ``model`` is a ``_core.Model``; ``config`` its context (``n_seq_max`` = how
    many requests decode together; more wait in a FIFO queue); ``seed`` the
    default sampling seed; ``speculation`` the requests' default n-gram
    speculation (None: off unless a request sets ``draft_max``).
    """

    def __init__(self, model: Any, config: ContextConfig, seed: int = RANDOM_SEED,
                 speculation: Speculation | None = None) -> None:
        self.model = model
        self.config = config
        self.seed = seed
        self.speculation = speculation or Speculation()
        self._core = _core.Engine(model, config.to_core())
        self._core.set_speculation(self.speculation.to_core())
        self._step_lock = threading.Lock()
        self._handles: dict[int, Handle] = {}
        self._handles_lock = threading.Lock()
        self._work = threading.Condition()
        self._scheduler: threading.Thread | None = None
        self._piece_cache: dict[int, str] = {}
        self._ids = itertools.count(1)

    @property
    def n_ctx(self) -> int:
        """KV cells in all (shared by every sequence: the cache is unified)."""
        return int(self._core.n_ctx)

    @property
    def n_ctx_seq(self) -> int:
        """Most tokens one sequence (prompt + generated) may hold."""
        return int(self._core.n_ctx_seq)

    # ----------------------------------------------------------- idle sequences
    def sequence(self, seq: int = 0) -> IdleSequence:
        """Sequence ``seq`` between requests: its cached tokens, eval, saved state
        (sequence 0 is ``Llama``'s single-user cache)."""
        return IdleSequence(self._core, self._step_lock, seq)

    def keep_states(self) -> None:
        """Save every idle sequence's state to the state cache (a server's shutdown: its
        conversations are in the disk tier for the next start); no cache: nothing."""
        with self._step_lock:
            self._core.keep_idle_states()

    def clear(self) -> None:
        """Drop every request (without events) and the whole KV cache."""
        with self._step_lock:
            self._core.clear()
            with self._handles_lock:
                handles, self._handles = list(self._handles.values()), {}
        for h in handles:
            h.error = "the engine was cleared"
            h._done.set()

    def perf(self) -> dict[str, float]:
        return dict(self._core.perf())

    @property
    def state_cache(self) -> Any:
        """The ``_core.StateCache`` this engine saves taken sequences to and restores prefixes from
        (:mod:`state_cache`); None: off. Set it between steps."""
        return self._core.state_cache

    @state_cache.setter
    def state_cache(self, cache: Any) -> None:
        with self._step_lock:
            self._core.state_cache = cache

    # ----------------------------------------------------------- requests
    def submit(self, request: Request) -> Handle:
        """Queue ``request`` (ValueError for a bad one, before anything runs); thread-safe."""
        sampler = request.sampling.to_core(self.seed)
        max_tokens = -1 if request.max_tokens is None or request.max_tokens <= 0 else int(request.max_tokens)
        external = request.logits_processor is not None or request.stopping_criteria is not None
        n_probs = -1 if request.logprobs is None else int(request.logprobs)
        check_draft_limits(request.draft_max, request.draft_min)
        drafts = [-1 if v is None else int(v) for v in (request.draft_max, request.draft_min)]
        # The core's submit is safe from any thread and never waits for a step. The
        # handle is registered under the same lock that dispatch takes to look it up,
        # so a step that already decodes this request cannot hand out its events first.
        with self._handles_lock:
            rid = self._core.submit(list(request.prompt), sampler, max_tokens, request.ignore_eos, n_probs, external,
                                    list(request.preserved_tokens), *drafts, list(request.media))
            handle = Handle(self, request, rid)
            self._handles[rid] = handle
        with self._work:
            self._work.notify_all()
        return handle

    def _cancel(self, handle: Handle) -> None:
        if not handle.done:
            self._core.cancel(handle.id)
            with self._work:
                self._work.notify_all()

    def cancel_all(self) -> None:
        with self._handles_lock:
            handles = list(self._handles.values())
        for h in handles:
            h.cancel()

    # ----------------------------------------------------------- driving
    def step(self) -> bool:
        """One batch for every active request; False when there was nothing to do."""
        with self._step_lock:
            return self._step_locked()

    def _step_locked(self) -> bool:
        if self._core.idle():
            return False
        for ev in self._core.step():
            self._dispatch(ev)
        return True

    def _advance(self, waiting: Handle) -> None:
        """Make progress for ``waiting``: step inline, or wait for the scheduler thread."""
        if self._scheduler is not None:
            with self._work:
                if not waiting._pieces and not waiting.done:
                    self._work.wait(0.1)
            return
        with self._step_lock:  # submit, step and dispatch all happen under it: the state is whole here
            if waiting._pieces or waiting.done:
                return  # another thread's step brought what we wait for
            if not self._step_locked():
                # The core has nothing for an unfinished request: its last events were
                # lost (an exception such as KeyboardInterrupt hit mid-dispatch).
                waiting.error = "this request's end was lost (interrupted while its events were handed out)"
                self._close(waiting, None, "", error=True)

    def drive_from_this_thread(self) -> None:
        """Declare the calling thread the one that steps this engine from now on.

        Readers of a :class:`Handle` then wait for that thread's steps instead of
        stepping inline (the server's scheduler, which has a loop of its own).
        """
        self._scheduler = threading.current_thread()

    # ----------------------------------------------------------- events
    def _piece(self, token: int) -> str:
        text = self._piece_cache.get(token)
        if text is None:
            text = self.model.token_to_piece(token, False).decode("utf-8", errors="replace")
            if len(self._piece_cache) < 65536:
                self._piece_cache[token] = text
        return text

    def _logprobs(self, h: Handle, ev: Any) -> list[TokenLogprob]:
        piece = self._piece(ev.token)
        top: dict[str, float] = {}
        for tok, lp in ev.top:
            top.setdefault(self._piece(tok), float(lp))
        top[piece] = float(ev.logprob)
        return [TokenLogprob(piece, h.request.text_offset + len(h._stops.text), float(ev.logprob),
                             tuple(top.items()))]

    def _dispatch(self, ev: Any) -> None:
        with self._handles_lock:
            h = self._handles.get(ev.id)
        if h is None:
            return
        kind = ev.kind
        if kind == EventKind.NEED_TOKEN:
            self._external(h, ev)
            return
        h.drafted, h.draft_accepted = int(ev.n_drafted), int(ev.n_draft_accepted)
        if kind == EventKind.TOKEN:
            h.n_reused = int(ev.n_reused)
            if not (ev.eog and not h.request.ignore_eos):
                self._on_token(h, ev)
        elif kind == EventKind.DONE:
            h.n_reused = int(ev.n_reused)
            h.speculation = str(ev.speculation)
            self._close(h, str(ev.finish_reason), bytes(ev.text).decode("utf-8", errors="replace"))
        elif kind == EventKind.ERROR:
            h.error = str(ev.error) or "llama.cpp failed"
            self._close(h, None, "", error=True)
        self._notify(h)

    def _on_token(self, h: Handle, ev: Any) -> None:
        h.tokens.append(int(ev.token))
        h._new_tokens.append(int(ev.token))
        lp = self._logprobs(h, ev) if h.request.logprobs is not None else None
        ready, hit = h._stops.feed(bytes(ev.text).decode("utf-8", errors="replace"))
        if hit:
            self._core.release(h.id)  # the caller ends it: the next token is never decoded
            h._push(ready, lp, None)
            self._close(h, "stop", "")
            return
        h._push(ready, lp, None)

    def _external(self, h: Handle, ev: Any) -> None:
        """Python chooses this token: logits processors, then the request's own sampler chain."""
        from ._numpy import numpy

        np = numpy()
        req = h.request
        logits = np.array(self._core.logits(h.id), dtype=np.float32)
        ids = np.array(list(req.prompt) + h.tokens, dtype=np.intc)
        if req.logits_processor is not None:
            logits = np.ascontiguousarray(req.logits_processor(ids, logits), dtype=np.float32)
        events = self._core.sample_with(h.id, logits)
        if req.stopping_criteria is not None and events and events[0].kind == EventKind.TOKEN:
            ids = np.append(ids, np.intc(events[0].token))
            if req.stopping_criteria(ids, logits):
                self._core.release(h.id)
                self._close(h, "stop", "")
                self._notify(h)
                return
        for e in events:
            self._dispatch(e)

    def _close(self, h: Handle, reason: str | None, tail: str, error: bool = False) -> None:
        if h.done:
            return
        with self._handles_lock:
            self._handles.pop(h.id, None)
        if error:
            h._done.set()
        else:
            h._finish(reason, tail)

    def _notify(self, h: Handle) -> None:
        if h._listener is not None:
            h._listener(h)
        if self._scheduler is not None:
            with self._work:
                self._work.notify_all()

    # ----------------------------------------------------------- facts
    def stats(self) -> dict[str, Any]:
        """Counters: steps, decode calls, batch and prompt tokens, time in step() and in llama_decode
        (ms), steps the step budget cut, and the engine's running cost estimates (ms per logits row,
        per prompt token) from which it turns ``step_budget_ms`` into prompt tokens; speculation's
        draft tokens verified and accepted, steps that verified one, and the decode-step cost line
        (``step_fixed_ms`` + ``step_row_ms`` per row) draft lengths are chosen with; with a state
        cache, its counters as ``state_cache_*`` (hits, misses, restored_tokens, bytes, ...)."""
        out = dict(self._core.stats())
        cache = self._core.state_cache
        if cache is not None:
            out.update({f"state_cache_{k}": v for k, v in cache.stats().items()})
        return out

    def load(self) -> dict[str, int]:
        """Requests decoding now and waiting, and KV cells in use / total."""
        return {"active": int(self._core.n_active()), "queued": int(self._core.n_queued()),
                "kv_used": int(self._core.kv_used()), "kv_size": int(self._core.n_ctx)}


def run_all(engine: Engine, requests: Sequence[Request]) -> list[list[Piece]]:
    """Submit every request, drive the engine inline until all are done; pieces per request."""
    handles = [engine.submit(r) for r in requests]
    out: list[list[Piece]] = [[] for _ in handles]
    pending = set(range(len(handles)))
    while pending:
        for i in list(pending):
            out[i].extend(handles[i].take())
            if handles[i].done and not handles[i]._pieces:
                pending.discard(i)
        if pending and not engine.step():
            for i in list(pending):
                if handles[i].error is not None:
                    raise EngineError(handles[i].error)
                if not handles[i].done and not handles[i]._pieces:  # idle core, unfinished request
                    raise EngineError("a request's end was lost (interrupted while its events were handed out)")
    for h in handles:
        if h.error is not None:
            raise EngineError(h.error)
    return out
