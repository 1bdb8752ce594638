"""Running admitted requests: one :class:`Run` per choice, from admission to release.

A run holds a place in the scheduler's bounded admission, submits its request,
yields its pieces as they arrive (with pings for streams), cancels the request
when the client goes away, and counts it in the metrics and the access log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request as HTTPRequest

from .. import responses
from ..engine import Collected, Piece
from .errors import APIError, bad
from .gate import LOG_KEY
from .requests import Prepared
from .scheduler import Full, Job
from .served import Served

__all__ = ["Run", "collect", "start", "stream"]


class Run:
    """One admitted request: submits it, yields its pieces, releases its place, counts it."""

    def __init__(self, served: Served, prepared: Prepared, http: HTTPRequest) -> None:
        self.served = served
        self.prepared = prepared
        self.http = http
        self.log: dict[str, Any] = http.scope.setdefault(LOG_KEY, {})
        self.scheduler = served.require_ready()
        try:
            self.scheduler.admit()
        except Full as exc:
            served.metrics.rejected.labels("queue_full").inc()
            raise APIError(503, f"the server is busy: {exc}; retry later", "unavailable_error",
                           code="server_busy", headers=served.retry_headers()) from None
        loop = asyncio.get_running_loop()
        self.job: Job = self.scheduler.submit(prepared.request, loop)
        self.finished = False
        self.released = False
        self.last_t: float | None = None
        self.usage: responses.Usage = responses.usage(prepared.n_prompt, 0)
        self.n_reused = 0
        self.log.update(prompt_tokens=prepared.n_prompt)

    async def submitted(self) -> None:
        """Wait until the engine accepted the request (at most one step), so that a request it
        refuses (a grammar that does not parse) is a 400 before a stream's 200 goes out."""
        try:
            await self.job.submitted.wait()
        except BaseException:
            self.close()
            raise
        if self.job.submit_error is not None:
            self.finished = True
            self.close()
            raise bad(str(self.job.submit_error))

    async def events(self, ping: bool = False) -> AsyncIterator[tuple[list[Piece], str | None] | None]:
        """``(pieces, error)`` as they arrive; with ``ping``, ``None`` after ``ping_interval`` s without any.

        Pings come from one timer per stream that checks every half interval whether
        anything arrived, not from a timeout around every read (``asyncio.wait_for``
        costs a task and a timer per token)."""
        job = self.job
        timer: asyncio.TimerHandle | None = None
        if ping:
            loop = asyncio.get_running_loop()
            tick = self.served.settings.ping_interval / 2  # a ping after one to two ticks of silence

            def check() -> None:
                nonlocal timer
                if job.quiet:
                    job.events.put_nowait(None)
                job.quiet = True
                timer = loop.call_later(tick, check)

            job.quiet = True
            timer = loop.call_later(tick, check)
        try:
            while True:
                event = await job.events.get()
                if event is None:
                    yield None
                    continue
                pieces, done, error = event
                self._account(pieces)
                if done:
                    self.finished = True
                    if job.submit_error is not None:
                        raise bad(str(job.submit_error))
                yield pieces, error
                if done:
                    return
        finally:
            if timer is not None:
                timer.cancel()
            self.close()

    def _account(self, pieces: list[Piece]) -> None:
        now = time.monotonic()
        m = self.served.metrics
        n_new = sum(len(p.tokens) for p in pieces)
        if n_new:
            if self.job.t_first is None:
                self.job.t_first = now
                m.ttft.observe(now - self.job.t_submit)
                self.log["ttft_ms"] = round((now - self.job.t_submit) * 1000, 2)
            elif self.last_t is not None:
                gap = (now - self.last_t) / n_new
                for _ in range(n_new):
                    m.itl.observe(gap)
            self.last_t = now
            m.tokens_predicted.inc(n_new)
        if pieces:
            self.usage = responses.usage(pieces[-1].n_prompt, pieces[-1].n_generated)
            self.n_reused = pieces[-1].n_reused

    def close(self) -> None:
        """Release the admission place once; a request the client abandoned is cancelled now."""
        if self.released:
            return
        self.released = True
        if not self.finished:
            self.job.cancel()
            self.log["cancelled"] = True
        self.scheduler.release()
        m = self.served.metrics
        h = self.job.handle
        if h is not None:  # it reached the engine: its prompt was (being) evaluated
            m.prompt_tokens.inc(max(0, self.prepared.n_prompt - self.n_reused))
            m.reused_tokens.inc(self.n_reused)
            if h.drafted:
                self.log.update(drafted=h.drafted, draft_accepted=h.draft_accepted)
            if h.speculation:  # why this request did not speculate
                self.log["speculation"] = h.speculation
        m.duration.observe(time.monotonic() - self.job.t_submit)
        self.log.update(completion_tokens=self.usage["completion_tokens"], reused_tokens=self.n_reused)

    async def watch_disconnect(self) -> None:
        """For non-streaming answers: a client that hangs up cancels its generation at once."""
        while True:
            message = await self.http.receive()
            if message["type"] == "http.disconnect":
                self.job.cancel()
                return


def start(served: Served, prepared: list[Prepared], n: int, http: HTTPRequest, cid: str,
          stream: bool) -> list[Run]:
    """Admit ``n`` runs of each prepared request (all or none), prompt by prompt: run ``p * n + j``
    is choice ``j`` of ``prepared[p]``. A fixed seed is offset per choice, so ``n`` choices differ
    like OpenAI's do."""
    runs: list[Run] = []
    try:
        for one in prepared:
            for i in range(n):
                request = one.request
                if i and request.sampling.seed is not None:
                    request = dataclasses.replace(
                        request, sampling=dataclasses.replace(request.sampling, seed=request.sampling.seed + i))
                runs.append(Run(served, dataclasses.replace(one, request=request), http))
    except BaseException:
        for r in runs:
            r.close()
        raise
    runs[0].log.update(id=cid, stream=stream, n=n)
    if len(prepared) > 1:
        runs[0].log.update(prompts=len(prepared), prompt_tokens=sum(p.n_prompt for p in prepared))
    return runs


async def collect(run: Run) -> Collected:
    """A non-streamed run's whole answer; a client that hangs up meanwhile cancels it."""
    got = Collected(run.prepared.request.logprobs is not None, run.prepared.n_prompt)
    watcher = asyncio.get_running_loop().create_task(run.watch_disconnect())
    try:
        async for item in run.events():
            assert item is not None  # no pings without ping=True
            pieces, error = item
            if error is not None:
                raise APIError(500, f"generation failed: {error}", "server_error")
            for p in pieces:
                got.add(p)
    finally:
        watcher.cancel()
    if got.finish_reason == "cancelled":
        raise APIError(503, "the request was cancelled (the server is shutting down)", "unavailable_error",
                       code="cancelled")
    run.log["finish_reason"] = got.finish_reason
    return got


async def stream(run: Run) -> AsyncIterator[Piece | None]:
    """A streamed run's pieces as they arrive (None: a ping is due); a failed generation or a
    cancel by the drain raises :class:`APIError`, which the stream writer sends as its last event."""
    async for item in run.events(ping=True):
        if item is None:
            yield None
            continue
        pieces, error = item
        if error is not None:
            raise APIError(500, f"generation failed: {error}", "server_error")
        for p in pieces:
            if p.finish_reason == "cancelled":
                raise APIError(503, "cancelled: the server is shutting down", "unavailable_error", code="cancelled")
            if p.finish_reason is not None:
                run.log["finish_reason"] = p.finish_reason
            yield p
