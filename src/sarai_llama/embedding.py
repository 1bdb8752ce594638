"""Pooled embeddings on a context of their own (``Llama(embedding=True)``, the server's
``/v1/embeddings``), and ``Llama``'s pooled calls (:class:`PooledCalls`: embed, rerank;
``Llama.create_embedding`` shapes ``embed``'s vectors as OpenAI's)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from . import _core
from .context_config import POOLING, ContextConfig
from .errors import utf8
from .pooled import DEFAULT_SEQS
from .rerank import Reranker
from .vocab import Vocab

__all__ = ["Embedder", "PooledCalls"]


class Embedder:
    """One pooled vector per input text, inputs decoded together (``_core.PooledBatch``).

    ``config`` must have ``embeddings`` set. The window, the longest input, is
    ``n_batch`` tokens (at most ``n_ctx``; 0 is the model's training length); a longer
    input is cut (``truncate``) or a ``ValueError``. Up to ``n_seq`` inputs share a
    decode, those of concurrent calls (the server's requests) too. Pooling "none"
    (one vector per token) gives the last token's vector, which is "last" pooling.
    """

    def __init__(self, model: Any, config: ContextConfig, n_seq: int = DEFAULT_SEQS) -> None:
        self._vocab = Vocab(model)
        self._n_ctx = config.n_ctx or int(model.n_ctx_train)
        window = min(config.n_batch, self._n_ctx)
        pooling = POOLING["last"] if config.pooling == POOLING["none"] else config.pooling
        config = dataclasses.replace(config, n_ctx=window, n_batch=window, pooling=pooling)
        self._batch = _core.PooledBatch(model, config.to_core(), n_seq)
        self.window = int(self._batch.n_batch)

    @property
    def n_ctx(self) -> int:
        """The configured context size (``Llama.n_ctx()``); inputs are read up to ``window`` tokens."""
        return self._n_ctx

    @property
    def n_decodes(self) -> int:
        """``llama_decode`` calls so far (inputs per decode: how much the calls shared)."""
        return int(self._batch.n_decodes)

    def perf(self) -> dict[str, float]:
        return dict(self._batch.perf())

    def embed(self, texts: list[str], truncate: bool = True, normalize: bool = False) -> tuple[list[list[float]], int]:
        """(one vector per text, total tokens read); ``normalize`` scales each to unit length."""
        inputs = []
        for text in texts:
            tokens = self._vocab.tokenize(utf8(text, "input"), add_bos=self._vocab.model.add_bos, special=True)
            if len(tokens) > self.window and not truncate:
                raise ValueError(f"input of {len(tokens)} tokens exceeds the {self.window}-token embedding window")
            inputs.append(tokens[: self.window])
        vectors = [list(v) for v in self._batch.run(inputs)] if inputs else []
        if normalize:
            for v in vectors:
                norm = math.sqrt(math.fsum(x * x for x in v))
                if norm > 0:
                    v[:] = [x / norm for x in v]
        return vectors, sum(len(t) for t in inputs)


class PooledCalls:
    """``Llama``'s calls on its pooled context: a part that ``Llama`` holds and shows as its
    own ``embed`` and ``rerank``. ``pooled``: the :class:`Embedder`, a
    :class:`~sarai_llama.rerank.Reranker` under rank pooling, or None (no pooled context:
    each call is a ``ValueError`` saying how to get one)."""

    def __init__(self, pooled: Embedder | Reranker | None) -> None:
        self.pooled = pooled

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

    def rerank(self, query: str, documents: Sequence[str]) -> list[float]:
        """Each document's relevance score for ``query``, in order (higher: more relevant): a
        reranker GGUF (a classifier head) loaded with ``embedding=True, pooling_type="rank"``
        (see :mod:`sarai_llama.rerank`). Pairs longer than ``n_batch`` tokens are a ``ValueError``."""
        pooled = self.pooled
        if not isinstance(pooled, Reranker):
            raise ValueError('create the Llama with embedding=True, pooling_type="rank" to rerank')
        return pooled.score(query, documents)[0]
