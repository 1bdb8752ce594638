"""Rerank: how relevant each document is to a query, from a GGUF with a classifier head.

A reranker (Qwen3-Reranker, bge-reranker, jina-reranker) reads a query and one
document as one input; llama.cpp's rank pooling passes the pooled hidden state
through the file's classifier head (``cls`` / ``cls.output`` tensors) and returns
its outputs, the first of which is the score (llama-server's choice; Qwen3's head
ends in a softmax over "yes"/"no", so its score is P(yes), a BERT head's is a logit).

A pair is formatted as llama-server formats it: through the GGUF's rerank prompt
(``tokenizer.chat_template.rerank``, with ``{query}`` and ``{document}``) where it
has one, else ``[BOS] query [EOS] [SEP] document [EOS]``, each of BOS / EOS / SEP
where the vocabulary adds it (SEP standing in for a missing EOS). The pairs of a
call, and of concurrent calls, are decoded together, up to ``n_seq`` per
``llama_decode`` (``_core.PooledBatch``); a score does not depend on the other pairs of the call,
though llama.cpp's CPU kernels differ with a batch's size: with flash attention
(its default) a pair scored alone can differ by ~1e-3 on random weights
(``tests/test_rerank.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from . import _core
from .context_config import POOLING, ContextConfig
from .errors import ParameterError, utf8
from .pooled import DEFAULT_SEQS

__all__ = ["CLASSIFIER_TENSORS", "Reranker", "why_not_reranker"]

#: The tensors of a classifier head (llama.cpp's LLM_TENSOR_CLS and LLM_TENSOR_CLS_OUT).
CLASSIFIER_TENSORS = ("cls.weight", "cls.output.weight")

_PLACEHOLDER = re.compile(r"\{query\}|\{document\}")


def why_not_reranker(model: Any) -> str | None:
    """Why ``model`` (a ``_core.Model``) cannot rerank, or None when it can: rank pooling
    needs a classifier head, without which llama.cpp would score with a hidden-state value."""
    if any(model.has_tensor(name) for name in CLASSIFIER_TENSORS):
        return None
    return (f"this model has no classifier head ({' or '.join(CLASSIFIER_TENSORS)} tensors), so it cannot "
            "rerank: use a reranker GGUF (e.g. bge-reranker-v2-m3, Qwen3-Reranker)")


class Reranker:
    """Scores (query, document) pairs on a rank-pooled context of its own.

    ``config`` must have ``embeddings`` and rank pooling; its ``n_batch`` (at most
    the model's training length) is the longest pair (the window), ``n_seq`` the pairs
    per decode. A model without a
    classifier head is a ``ValueError`` (see :func:`why_not_reranker`).
    """

    def __init__(self, model: Any, config: ContextConfig, n_seq: int = DEFAULT_SEQS) -> None:
        if not config.embeddings or config.pooling != POOLING["rank"]:
            raise ValueError("a Reranker needs a configuration with embeddings and rank pooling")
        why = why_not_reranker(model)
        if why is not None:
            raise ValueError(why)
        self.model = model
        self._batch = _core.PooledBatch(model, config.to_core(), n_seq)
        # The longest pair: one batch, and no position past the training length (learned
        # position embeddings, as BERT's, have no row for it).
        self.window = min(int(self._batch.n_batch), int(model.n_ctx_train))
        self.template = model.chat_template("rerank")

    @property
    def n_ctx(self) -> int:
        return self.window

    def perf(self) -> dict[str, float]:
        return dict(self._batch.perf())

    def pair_tokens(self, query: str, document: str) -> list[int]:
        """The tokens of one (query, document) input (``ValueError`` for text that is not valid Unicode)."""
        model = self.model
        if self.template is not None:
            # One pass, so that a query spelling "{document}" stays text.
            text = _PLACEHOLDER.sub(lambda m: query if m.group(0) == "{query}" else document, self.template)
            return list(model.tokenize(utf8(text, "documents"), False, True))
        q = list(model.tokenize(utf8(query, "query"), False, False)) if query else []
        d = list(model.tokenize(utf8(document, "documents"), False, False)) if document else []
        eos = model.token_eos if model.token_eos >= 0 else model.token_sep
        tokens = [model.token_bos] if model.add_bos else []
        tokens += q + ([eos] if model.add_eos else []) + ([model.token_sep] if model.add_sep else [])
        return tokens + d + ([eos] if model.add_eos else [])

    def score(self, query: str, documents: Sequence[str]) -> tuple[list[float], int]:
        """(one score per document in order, tokens read). A pair longer than the window is a
        :class:`~sarai_llama.errors.ParameterError` naming ``documents`` (a cut pair would lose
        the document's end or the template's closing part, and its score would mean little)."""
        inputs = [self.pair_tokens(query, d) for d in documents]
        for i, tokens in enumerate(inputs):
            if len(tokens) > self.window:
                raise ParameterError(f"documents[{i}] with the query is {len(tokens)} tokens; this reranker reads "
                                     f"at most {self.window}", "documents")
        return [v[0] for v in self._run(inputs)], sum(len(t) for t in inputs)

    def embed(self, texts: list[str], truncate: bool = True, normalize: bool = False) -> tuple[list[list[float]], int]:
        """Each text alone through the classifier (what ``Llama.embed`` gives under rank
        pooling: ``n_cls_out`` floats per text); ``normalize`` is ignored (scores, not directions)."""
        model = self.model
        inputs = []
        for text in texts:
            tokens = list(model.tokenize(utf8(text, "input"), bool(model.add_bos), True))
            if len(tokens) > self.window and not truncate:
                raise ValueError(f"input of {len(tokens)} tokens exceeds the {self.window}-token window")
            inputs.append(tokens[: self.window])
        return self._run(inputs), sum(len(t) for t in inputs)

    def _run(self, inputs: list[list[int]]) -> list[list[float]]:
        if not inputs:
            return []
        return [list(v) for v in self._batch.run(inputs)]  # concurrent calls share decodes
