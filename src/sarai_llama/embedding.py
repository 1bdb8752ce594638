"""Pooled embeddings on a context of their own (``Llama(embedding=True)``)."""

from __future__ import annotations

import threading
from typing import Any

from . import _core
from ._numpy import numpy as _numpy
from .context_config import ContextConfig
from .errors import utf8
from .vocab import Vocab

__all__ = ["Embedder"]


class Embedder:
    """One pooled vector per input text, one input at a time on one context.

    ``config`` must have ``embeddings`` set; an input longer than the window
    (``n_batch``, at most ``n_ctx``) is cut (``truncate``) or a ``ValueError``.
    """

    def __init__(self, model: Any, config: ContextConfig) -> None:
        self._vocab = Vocab(model)
        self._ctx = _core.Context(model, config.to_core())
        self.window = min(config.n_batch, self._ctx.n_ctx)
        self._lock = threading.Lock()

    @property
    def n_ctx(self) -> int:
        return int(self._ctx.n_ctx)

    def perf(self) -> dict[str, float]:
        return dict(self._ctx.perf())

    def embed(self, texts: list[str], truncate: bool = True, normalize: bool = False) -> tuple[list[list[float]], int]:
        """(one vector per text, total tokens read); ``normalize`` scales each to unit length."""
        np = _numpy()  # the core hands vectors over as arrays
        vectors, total = [], 0
        with self._lock:
            for text in texts:
                tokens = self._vocab.tokenize(utf8(text, "input"), add_bos=self._vocab.model.add_bos, special=True)
                if len(tokens) > self.window:
                    if not truncate:
                        raise ValueError(f"input of {len(tokens)} tokens exceeds the {self.window}-token "
                                         "embedding window")
                    tokens = tokens[: self.window]
                self._ctx.clear()
                self._ctx.eval(tokens, False)
                vec = self._ctx.embeddings()
                norm = float(np.linalg.norm(vec)) if normalize else 0.0
                vectors.append((vec / norm if norm > 0 else vec).tolist())
                total += len(tokens)
            self._ctx.clear()
        return vectors, total
