"""Pooled embeddings on a context of their own (``Llama(embedding=True)``), and ``Llama``'s
pooled calls (:class:`PooledCalls`: embed, create_embedding, rerank)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from . import _core, responses
from ._numpy import numpy as _numpy
from .context_config import ContextConfig
from .errors import utf8
from .rerank import Reranker
from .vocab import Vocab

__all__ = ["Embedder", "PooledCalls"]


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


class PooledCalls:
    """``Llama``'s calls on its pooled context: a base of ``Llama``, which provides
    ``pooled`` (the :class:`Embedder`, a :class:`~sarai_llama.rerank.Reranker` under rank
    pooling, or None) and ``model_path``."""

    model_path: str

    @property
    def pooled(self) -> Embedder | Reranker | None:
        raise NotImplementedError

    def embed(self, input: str | Sequence[str], normalize: bool = False, truncate: bool = True,
              return_count: bool = False) -> Any:
        """One pooled vector of ``n_embd`` floats per input (a list of lists for a list input;
        a reranker's classifier outputs per input under rank pooling).

        Needs ``Llama(..., embedding=True)``. ``truncate`` cuts inputs longer than
        ``n_batch`` tokens; otherwise they raise ``ValueError``.
        """
        pooled = self.pooled
        if pooled is None:
            raise ValueError("create the Llama with embedding=True to compute embeddings")
        vectors, total = pooled.embed([input] if isinstance(input, str) else list(input), truncate, normalize)
        out: Any = vectors[0] if isinstance(input, str) else vectors
        return (out, total) if return_count else out

    def create_embedding(self, input: str | Sequence[str], model: str | None = None) -> dict[str, Any]:
        """OpenAI-shaped embeddings: ``{"object": "list", "data": [{"embedding": [...]}], ...}``."""
        vectors, total = self.embed(input, return_count=True)
        return responses.embeddings([vectors] if isinstance(input, str) else vectors, model or self.model_path, total)

    def rerank(self, query: str, documents: Sequence[str]) -> list[float]:
        """Each document's relevance score for ``query``, in order (higher: more relevant): a
        reranker GGUF (a classifier head) loaded with ``embedding=True, pooling_type="rank"``
        (see :mod:`sarai_llama.rerank`). Pairs longer than ``n_batch`` tokens are a ``ValueError``."""
        pooled = self.pooled
        if not isinstance(pooled, Reranker):
            raise ValueError('create the Llama with embedding=True, pooling_type="rank" to rerank')
        return pooled.score(query, documents)[0]
