"""Exceptions of the public API that are not Python's own."""

from __future__ import annotations

__all__ = ["ModelLoadError"]


class ModelLoadError(ValueError):
    """The model file exists but cannot be loaded (corrupt, unsupported, hostile)."""
