"""The sizes of the pooled contexts the server opens (embeddings, rerank): how long an input
may be and how many inputs share a decode (``_core.PooledBatch``)."""

from __future__ import annotations

__all__ = ["DEFAULT_SEQS", "DEFAULT_WINDOW", "server_window"]

#: The longest input (query + document; text to embed), in tokens, of the server's pooled
#: contexts: llama-server's default batch; pairs and passages are rarely longer, and each
#: decode's buffers grow with it (llama.cpp keeps n_vocab logits per token read, even
#: for embeddings: 2 GiB at 2048 tokens for Gemma 3's 262k vocabulary).
DEFAULT_WINDOW = 2048
#: Inputs decoded together in one llama_decode (while their tokens fit the window).
DEFAULT_SEQS = 16


def server_window(n_ctx_seq: int) -> int:
    """The window of the server's pooled contexts for sequences of ``n_ctx_seq`` tokens:
    :data:`DEFAULT_WINDOW` at most, a multiple of :data:`DEFAULT_SEQS` (else fewer
    inputs share a decode: ``_core.PooledBatch`` needs its sequence count to divide it)."""
    window = min(n_ctx_seq, DEFAULT_WINDOW)
    return window - window % DEFAULT_SEQS if window >= DEFAULT_SEQS else window
