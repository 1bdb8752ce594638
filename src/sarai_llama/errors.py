"""Exceptions of the public API that are not Python's own."""

from __future__ import annotations

__all__ = ["ModelLoadError", "ParameterError", "utf8"]


class ModelLoadError(ValueError):
    """The model file exists but cannot be loaded (corrupt, unsupported, hostile)."""


class ParameterError(ValueError):
    """A bad value of one named request parameter; ``param`` names it (the server's error ``param``)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def utf8(text: str, what: str) -> bytes:
    """``text`` as UTF-8 for the compiled core; ``ValueError`` naming ``what`` when it cannot be.

    A Python ``str`` can hold a lone surrogate (JSON's ``"\\ud800"`` makes one), for which no
    UTF-8 exists: the core would refuse it with an opaque ``TypeError``, ``str.encode`` with a
    ``UnicodeEncodeError``; this says which argument and where.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode text: {exc.reason} at position {exc.start}") from None
