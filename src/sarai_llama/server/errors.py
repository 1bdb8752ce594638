"""Errors as data, and the handlers that answer every failure in its protocol's shape.

An :class:`APIError` carries its HTTP status, ``type``, ``param`` and ``code`` as
data. A ``ValueError`` from the library becomes a 400 through :func:`invalid`:
a :class:`~sarai_llama.errors.ParameterError` names its own ``param``; any other
takes the one the route knows (the field it was reading). How an error goes on
the wire is the protocol's: OpenAI's ``{"error": {...}}`` unless a protocol
module registers its own :data:`Shape` for its paths (:class:`Shapes`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ParameterError

__all__ = ["APIError", "Shape", "Shapes", "bad", "install_handlers", "internal", "invalid", "openai_shape"]

logger = logging.getLogger("sarai_llama.server")


class APIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, shape: Shape | None = None) -> JSONResponse:
        """The HTTP answer in ``shape`` (OpenAI's by default), with the error's headers."""
        status, body = (shape or openai_shape)(self)
        return JSONResponse(body, status_code=status, headers=self.headers)


#: How a protocol puts an :class:`APIError` on the wire: its HTTP status and JSON body.
Shape = Callable[[APIError], tuple[int, dict[str, Any]]]


def openai_shape(exc: APIError) -> tuple[int, dict[str, Any]]:
    """OpenAI's (and llama-server's) shape: the error's own status and ``{"error": {...}}``."""
    return exc.status, exc.body()


class Shapes:
    """Which shape answers a request path: a protocol's own under its path prefixes, else OpenAI's."""

    def __init__(self, by_prefix: dict[str, Shape] | None = None) -> None:
        self.by_prefix = dict(by_prefix or {})

    def of(self, path: str) -> Shape:
        for prefix, shape in self.by_prefix.items():
            if path == prefix or path.startswith(prefix + "/"):
                return shape
        return openai_shape


def bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 ``invalid_request_error``."""
    return APIError(400, message, param=param, code=code)


def invalid(exc: ValueError, param: str | None = None) -> APIError:
    """A 400 for a library ``ValueError``: its own ``param`` when it names one, else ``param``."""
    return bad(str(exc), exc.param if isinstance(exc, ParameterError) else param)


def install_handlers(app: FastAPI, shapes: Shapes) -> None:
    """Every exception a route raises answered in its path's shape; an unexpected one is a logged 500."""

    @app.exception_handler(APIError)
    async def _api_error(request: HTTPRequest, exc: APIError) -> JSONResponse:
        return exc.response(shapes.of(request.url.path))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
            return bad(message, None, "invalid_json").response(shapes.of(request.url.path))
        message = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
                            for e in errors[:5])
        return bad(message, ".".join(loc) or None).response(shapes.of(request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: HTTPRequest, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(exc.status_code, str(exc.detail), type_).response(shapes.of(request.url.path))

    @app.exception_handler(Exception)
    async def _unexpected(request: HTTPRequest, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error in %s", request.url.path)
        return internal(exc).response(shapes.of(request.url.path))


def internal(exc: BaseException) -> APIError:
    """A 500 that names the exception's type only (its text may hold request data)."""
    return APIError(500, f"internal error: {type(exc).__name__}", "server_error")
