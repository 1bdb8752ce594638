"""llama-cpp-python's per-token hooks: logits processors and stopping criteria.

Both take numpy arrays (numpy is imported only when one is used, see
``_numpy.py``) and make every token cross into Python: the engine hands such
a request's logits to the caller instead of sampling them in C++.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["LogitsProcessor", "LogitsProcessorList", "MinTokensLogitsProcessor", "StoppingCriteria", "StoppingCriteriaList"]

LogitsProcessor = Callable[["np.ndarray", "np.ndarray"], "np.ndarray"]
StoppingCriteria = Callable[["np.ndarray", "np.ndarray"], bool]


class LogitsProcessorList(list):
    """A list of ``fn(input_ids, scores) -> scores`` applied in order."""

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


class StoppingCriteriaList(list):
    """A list of ``fn(input_ids, logits) -> bool``; generation stops when any returns True."""

    def __call__(self, input_ids: np.ndarray, logits: np.ndarray) -> bool:
        return any(criterion(input_ids, logits) for criterion in self)


class MinTokensLogitsProcessor:
    """Bans ``token_eos`` until ``min_tokens`` tokens are generated (a logits processor).

    The first call sees the prompt: its length is remembered, so one instance
    serves one request.
    """

    def __init__(self, min_tokens: int, token_eos: int) -> None:
        self.min_tokens = min_tokens
        self.token_eos = token_eos
        self.prompt_tokens: int | None = None

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.prompt_tokens is None:
            self.prompt_tokens = len(input_ids)
        if len(input_ids) - self.prompt_tokens < self.min_tokens:
            scores[self.token_eos] = float("-inf")
        return scores
