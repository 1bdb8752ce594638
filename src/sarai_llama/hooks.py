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

__all__ = ["LogitsProcessor", "LogitsProcessorList", "StoppingCriteria", "StoppingCriteriaList"]

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
