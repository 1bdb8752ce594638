"""Errors in OpenAI's shape, and the handlers that answer every failure with one.

An :class:`APIError` carries its HTTP status, ``type``, ``param`` and ``code`` as
data. A ``ValueError`` from the library becomes a 400 through :func:`invalid`:
a :class:`~sarai_llama.errors.ParameterError` names its own ``param``; any other
takes the one the route knows (the field it was reading).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ParameterError

__all__ = ["APIError", "bad", "install_handlers", "internal", "invalid"]

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

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 ``invalid_request_error``."""
    return APIError(400, message, param=param, code=code)


def invalid(exc: ValueError, param: str | None = None) -> APIError:
    """A 400 for a library ``ValueError``: its own ``param`` when it names one, else ``param``."""
    return bad(str(exc), exc.param if isinstance(exc, ParameterError) else param)


def install_handlers(app: FastAPI) -> None:
    """Every exception a route raises answered in OpenAI's shape; an unexpected one is a logged 500."""

    @app.exception_handler(APIError)
    async def _api_error(request: HTTPRequest, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
            return bad(message, None, "invalid_json").response()
        message = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
                            for e in errors[:5])
        return bad(message, ".".join(loc) or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: HTTPRequest, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(exc.status_code, str(exc.detail), type_).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: HTTPRequest, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error in %s", request.url.path)
        return internal(exc).response()


def internal(exc: BaseException) -> APIError:
    """A 500 that names the exception's type only (its text may hold request data)."""
    return APIError(500, f"internal error: {type(exc).__name__}", "server_error")
