"""The one place the sarai-llama version is written (pyproject.toml reads it)."""

__version__ = "0.1.0"
