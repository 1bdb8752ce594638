"""In front of every route: request id, API keys, the body-size limit, one access-log line."""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import APIError, Shapes
from .lifecycle import ServerState
from .pool import PINS_KEY

__all__ = ["ASGIApp", "Gate", "LOG_KEY"]

access_logger = logging.getLogger("sarai_llama.access")

#: The scope key of a request's access-log record: routes add their fields (ids, token counts) to it.
LOG_KEY = "sarai_log"

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]],
                                                                                        Awaitable[None]]],
                   Awaitable[None]]


class Gate:
    """In front of every route: request id, API keys, the body-size limit, one access-log line.

    Pure ASGI (no BaseHTTPMiddleware) so streaming responses pass through untouched
    and disconnects still reach the route.
    """

    def __init__(self, app: ASGIApp, state: ServerState, shapes: Shapes) -> None:
        self.app = app
        self.state = state
        self.shapes = shapes
        self.keys = [k.encode("utf-8") for k in state.settings.api_key]
        self.public = {"/health"} | ({"/metrics"} if state.settings.metrics_public else set())

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        offered: list[bytes] = []
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            offered.append(auth[7:].strip())
        if b"x-api-key" in headers:
            offered.append(headers[b"x-api-key"].strip())
        ok = False
        for given in offered:
            for key in self.keys:  # every comparison runs: the time says nothing about which key or prefix
                ok |= hmac.compare_digest(given, key)
        return ok

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.monotonic()
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        log: dict[str, Any] = {"request_id": rid}
        scope[LOG_KEY] = log
        pins: list[Any] = []  # the models this request uses (ServerState.acquire), released once it answered
        scope[PINS_KEY] = pins
        status = [0]

        async def send_logged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        path = scope.get("path", "")
        shape = self.shapes.of(path)

        async def reply(error: APIError) -> None:
            await error.response(shape)({"type": "http"}, _no_receive, send_logged)

        try:
            if self.keys and path not in self.public and not self._authorised(headers):
                await reply(APIError(401, "Incorrect API key provided", "invalid_request_error",
                                     code="invalid_api_key"))
                return
            limit = self.state.settings.max_body_bytes
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                await reply(APIError(413, f"the request body is larger than {limit} bytes", code="request_too_large"))
                return
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                # Read the body here, bounded, so a chunked upload cannot grow past the limit either;
                # the route then reads it from memory and later receive() calls see disconnects.
                chunks: list[bytes] = []
                size = 0
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await reply(APIError(413, f"the request body is larger than {limit} bytes",
                                             code="request_too_large"))
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                body = b"".join(chunks)
                replayed = [False]

                async def replay() -> dict[str, Any]:
                    if not replayed[0]:
                        replayed[0] = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                # Every route here takes JSON: a body sent without its content type (curl -d sends
                # form encoding) is read as JSON, as llama-server does, instead of failing as a form.
                scope = dict(scope)
                scope["headers"] = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"] + \
                    [(b"content-type", b"application/json")]
                await self.app(scope, replay, send_logged)
            else:
                await self.app(scope, receive, send_logged)
        finally:
            for served in pins:
                self.state.pool.release(served)
            if self.state.settings.access_log and path != "/health" and path != "/metrics":
                log.update(method=scope.get("method"), path=path, status=status[0],
                           client=(scope.get("client") or ("", 0))[0],
                           duration_ms=round((time.monotonic() - t0) * 1000, 2))
                access_logger.info(json.dumps(log, separators=(",", ":")))
            endpoint = path if path.startswith("/v1/") or path in ("/tokenize", "/detokenize", "/completions",
                                                                   "/chat/completions", "/health", "/metrics",
                                                                   "/models", "/embeddings") else "other"
            self.state.metrics.requests.labels(endpoint, str(status[0])).inc()


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}
