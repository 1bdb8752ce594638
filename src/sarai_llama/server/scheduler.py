"""The one thread that drives the engine, and the bounded admission in front of it.

HTTP handlers (asyncio) build a :class:`~sarai_llama.engine.Request` and hand it
to :meth:`Scheduler.submit`; the scheduler thread submits it to the engine and
steps; each request's pieces come back through ``Handle.set_listener`` into the
request's ``asyncio.Queue``. Only requests and pieces cross between the threads.

What a step produced for all requests crosses in ONE ``call_soon_threadsafe``
per event loop (not one per request): on a small machine every wake-up of the
event loop takes CPU from the decode's threads, and at 8 streams the batched
hand-over is that many fewer wake-ups per token.

Why the loop is here and not in the engine: admission is counted
here (the bounded queue and its 503s), and the stepping thread itself submits
what the handlers queued, between two steps, so a request is accepted or
refused within one step and every Handle is created on one thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ..engine import Engine, Handle, Piece, Request

__all__ = ["Full", "Job", "Scheduler"]

logger = logging.getLogger("sarai_llama.server")

#: An idle engine waits this long after a submission for the next one of the same burst...
BURST_GAP_S = 0.002
#: ... and no longer than this in all (see Scheduler._gather_burst).
BURST_MAX_S = 0.010


class Full(Exception):
    """The admission queue is full (HTTP 503 with Retry-After)."""


@dataclass
class Job:
    """One request's passage through the scheduler, as the HTTP side sees it.

    ``events`` receives ``(pieces, done, error)`` tuples in the event loop's
    thread, and ``None`` when the reader's ping timer found the stream quiet.
    ``handle`` is set once the scheduler thread submitted the request.
    """

    request: Request
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[tuple[list[Piece], bool, str | None] | None] = field(default_factory=asyncio.Queue)
    handle: Handle | None = None
    cancelled: bool = False
    submit_error: BaseException | None = None
    t_submit: float = field(default_factory=time.monotonic)
    t_first: float | None = None  # the first generated token reached the HTTP side
    submitted: asyncio.Event = field(default_factory=asyncio.Event)  # the engine accepted or refused it
    quiet: bool = True  # nothing arrived since the reader's last ping check (see Run.events)

    def post(self, event: tuple[list[Piece], bool, str | None]) -> None:
        """Hand ``event`` to the reader (in the event loop's thread)."""
        self.quiet = False
        self.events.put_nowait(event)

    def cancel(self) -> None:
        """Stop this request now (the client went away); safe before and after submission."""
        self.cancelled = True
        if self.handle is not None:
            self.handle.cancel()


class Scheduler:
    """Owns the engine's stepping thread and the count of admitted requests.

    ``capacity`` = sequences + ``max_queue``: a request beyond it is refused at
    once (:class:`Full`) instead of waiting without bound. The count is kept in
    the event loop's thread (:meth:`admit` / :meth:`release`), so it needs no lock.
    """

    def __init__(self, engine: Engine, max_queue: int, on_step_error: Callable[[BaseException], None] | None = None,
                 cores: AbstractContextManager[Any] | None = None):
        self.engine = engine
        self._cores = cores if cores is not None else contextlib.nullcontext()  # held around each step
        self.n_seq = engine.config.n_seq_max
        self.max_queue = max_queue
        self.admitted = 0  # requests between admit() and release(): decoding or waiting
        self._inbox: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sarai-scheduler", daemon=True)
        self._on_step_error = on_step_error
        self.failed: BaseException | None = None
        # Calls for the event loops, gathered during a step (scheduler thread only): (job, fn, arg).
        self._outbox: list[tuple[Job, Callable[[Any], None], Any]] = []

    # ------------------------------------------------------------ event-loop side
    @property
    def waiting(self) -> int:
        """Admitted requests not decoding yet (the admission queue's length)."""
        return max(0, self.admitted - self.n_seq)

    @property
    def capacity(self) -> int:
        """The most requests admitted at once: the sequences plus ``max_queue``."""
        return self.n_seq + self.max_queue

    def admit(self) -> None:
        if self.admitted >= self.capacity:
            raise Full(f"{self.admitted - self.n_seq} requests already wait for one of {self.n_seq} sequences")
        self.admitted += 1

    def release(self) -> None:
        self.admitted -= 1

    def submit(self, request: Request, loop: asyncio.AbstractEventLoop) -> Job:
        """Queue ``request`` for the scheduler thread (call :meth:`admit` first)."""
        job = Job(request, loop)
        with self._wake:
            self._inbox.append(job)
            self._wake.notify()
        return job

    # ------------------------------------------------------------ thread
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify()
        self._thread.join(timeout)

    def _listener(self, job: Job) -> Callable[[Handle], None]:
        def deliver(handle: Handle) -> None:
            # Runs in this (stepping) thread: take the pieces here, so the deque is only
            # touched by one thread; _flush hands them over after the step.
            pieces = handle.take()
            done = handle.done
            if pieces or done:
                self._outbox.append((job, job.post, (pieces, done, handle.error)))

        return deliver

    def _flush(self) -> None:
        """Hand the gathered calls to their event loops, one thread-safe call per loop."""
        if not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Callable[[Any], None], Any]]] = {}
        for item in batch:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, calls in by_loop.items():
            try:
                loop.call_soon_threadsafe(_run_calls, calls)
            except RuntimeError:  # the event loop is closed: nobody reads these any more
                for job, _, _ in calls:
                    if job.handle is not None:
                        job.handle.cancel()

    def _admit_inbox(self) -> None:
        while True:
            with self._wake:
                if not self._inbox:
                    return
                job = self._inbox.popleft()
            if job.cancelled:
                self._post(job, ([], True, None))
                self._signal(job)
                continue
            try:
                handle = self.engine.submit(job.request)
            except Exception as exc:  # a request the core refused (bad grammar, prompt too long)
                job.submit_error = exc
                self._post(job, ([], True, str(exc)))
                self._signal(job)
                continue
            job.handle = handle
            self._signal(job)
            if job.cancelled:  # the client left between the check above and now
                handle.cancel()
            handle.set_listener(self._listener(job))

    def _signal(self, job: Job) -> None:
        self._outbox.append((job, _set_event, job.submitted))

    def _post(self, job: Job, event: tuple[list[Piece], bool, str | None]) -> None:
        self._outbox.append((job, job.post, event))

    def _run(self) -> None:
        # Handle iteration (not used here) would wait for this thread instead of stepping inline.
        self.engine.drive_from_this_thread()
        failures = 0
        while not self._stop.is_set():
            self._admit_inbox()
            self._flush()  # acceptances and refusals go out before the step, not after it
            try:
                with self._cores:  # other models' engines step in turn (server.served.Turns)
                    stepped = self.engine.step()
                failures = 0
            except Exception as exc:  # the engine broke: end what runs, keep the thread alive
                failures += 1
                logger.exception("engine step failed")
                self.engine.cancel_all()
                self._flush()
                if failures >= 3:
                    self.failed = exc
                    if self._on_step_error is not None:
                        self._on_step_error(exc)
                    time.sleep(0.5)
                continue
            self._flush()
            if not stepped:
                cache = self.engine.state_cache
                for warning in cache.take_warnings() if cache is not None else ():
                    logger.warning("%s", warning)  # a state file refused (damaged, another model's)
                with self._wake:
                    if not self._inbox and not self._stop.is_set():
                        # Idle: sleep until a submission arrives (notify) or briefly, so that
                        # a cancel of a request that is still queued inside the core is seen.
                        self._wake.wait(0.05)
                    self._gather_burst()
        cache = self.engine.state_cache
        if cache is not None and cache.disk_dir:  # the conversations still in sequences outlive the process
            self.engine.keep_states()

    def _gather_burst(self) -> None:
        """With ``_wake`` held and the engine idle: let a burst of submissions finish arriving.

        Clients that start together reach the inbox over a few milliseconds (the event
        loop parses and tokenizes one request after another). Stepping on the first
        alone would decode its prompt in a batch of its own and everyone else's one
        step (tens of ms) later; waiting while submissions keep coming, each within
        BURST_GAP_S of the previous and BURST_MAX_S in all, puts the burst's prompts
        into one decode. A lone request pays BURST_GAP_S once, and only when the
        engine had nothing else to do.
        """
        if not self._inbox:
            return
        deadline = time.monotonic() + BURST_MAX_S
        while not self._stop.is_set():
            seen = len(self._inbox)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(min(BURST_GAP_S, left))  # a submission's notify ends the wait early
            if len(self._inbox) == seen:
                return

    def load(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.engine.load())
        out["admitted"] = self.admitted
        out["waiting"] = self.waiting
        return out


def _run_calls(calls: list[tuple[Job, Callable[[Any], None], Any]]) -> None:
    for _, fn, arg in calls:
        fn(arg)


def _set_event(event: asyncio.Event) -> None:
    event.set()
