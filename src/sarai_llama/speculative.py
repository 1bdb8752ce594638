"""Prompt-lookup drafts (llama-cpp-python's ``LlamaPromptLookupDecoding``).

A draft model proposes the tokens that followed the latest occurrence of the
last n-gram in the text so far: rewriting, editing code or quoting a document
repeat long stretches of the prompt, which such a lookup finds for free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._numpy import numpy as _numpy

if TYPE_CHECKING:
    import numpy as np

__all__ = ["LlamaDraftModel", "LlamaPromptLookupDecoding"]


class LlamaDraftModel:
    """A draft model: ``draft(input_ids) -> candidate next tokens`` (possibly none)."""

    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError


class LlamaPromptLookupDecoding(LlamaDraftModel):
    """Drafts by n-gram lookup in the tokens so far.

    ``max_ngram_size``: the longest suffix n-gram searched (default 2; longer
    first). ``num_pred_tokens``: most tokens proposed (default 10).
    """

    def __init__(self, max_ngram_size: int = 2, num_pred_tokens: int = 10) -> None:
        if max_ngram_size < 1 or num_pred_tokens < 1:
            raise ValueError("max_ngram_size and num_pred_tokens must be at least 1")
        self.max_ngram_size = max_ngram_size
        self.num_pred_tokens = num_pred_tokens

    @staticmethod
    def find_candidate_pred_tokens(input_ids: Any, max_ngram_size: int, num_pred_tokens: int) -> np.ndarray:
        """The up to ``num_pred_tokens`` tokens after the earliest occurrence of
        the longest suffix n-gram (``max_ngram_size`` down to 1) of ``input_ids``; an
        empty array when no suffix n-gram occurred before."""
        np = _numpy()
        ids = np.asarray(input_ids)
        n = len(ids)
        for size in range(min(max_ngram_size, n - 1), 0, -1):
            suffix = ids[n - size:]
            # Every start whose window equals the suffix, the suffix itself excluded.
            windows = np.lib.stride_tricks.sliding_window_view(ids[:n - 1], size)
            starts = np.nonzero(np.all(windows == suffix, axis=1))[0]
            for start in starts:  # the earliest first, as llama-cpp-python: the source text being rewritten
                follow = ids[start + size:start + size + num_pred_tokens]
                if len(follow):
                    return follow
        return np.array([], dtype=ids.dtype if n else np.intc)

    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        return self.find_candidate_pred_tokens(input_ids, self.max_ngram_size, self.num_pred_tokens)
