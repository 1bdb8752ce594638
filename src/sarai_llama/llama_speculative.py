"""Speculative decoding's configuration: n-gram drafts verified by the engine.

The engine (``_core.Engine``, C++) drafts and verifies: a generating sequence
looks up its last ``ngram_size`` tokens in its own context (prompt and output),
proposes what followed their most recent earlier occurrence, and verifies that
draft in the same batch as every other sequence's token. Rewriting, editing
code or quoting a document repeat long stretches of the prompt, which the
lookup finds for free. Draft lengths follow each sequence's measured
acceptance and the measured cost of a batch row, so text without repetition,
or a full batch, is not slowed down.

:class:`Speculation` is the one place these settings are checked; ``Llama``
takes llama-cpp-python's ``draft_model=LlamaPromptLookupDecoding(...)`` and the
server ``--spec-type`` / ``--draft-max`` / ``--draft-min`` /
``--spec-ngram-size-n`` (and per request ``speculative.n_max`` / ``speculative.n_min``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _core
from ._numpy import numpy as _numpy
from .errors import ParameterError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DEFAULT_DRAFT_MAX", "DEFAULT_NGRAM_SIZE", "MAX_DRAFT", "MAX_NGRAM_SIZE", "LlamaDraftModel", "LlamaPromptLookupDecoding",
           "Speculation", "check_draft_limits"]

#: The most draft tokens a step may carry for one sequence (the core's kMaxDraft).
MAX_DRAFT = 256
#: The longest n-gram looked up (the core's limit: a longer key is a copy found later anyway).
MAX_NGRAM_SIZE = 64
#: Draft limit when speculation is on and none is given: a middle value, not tuned yet
#: (llama.cpp drafts at most 3 tokens with a draft model, 64 with ngram-mod). The engine
#: shortens drafts whose measured acceptance and step cost do not pay, so the limit bounds
#: the best case, not the usual one.
DEFAULT_DRAFT_MAX = 16
#: n-gram size looked up (reasoned, not tuned): 3 tokens re-find a copied passage three
#: tokens after an edit, where llama-server's ngram-simple (12) waits 12 tokens; a wrong
#: 3-token match costs only a rejected draft, which the acceptance record then shortens.
DEFAULT_NGRAM_SIZE = 3


#: Speculation types by llama-server's names (``--spec-type``): the n-gram lookup, and off.
SPEC_TYPES = ("ngram-simple", "none")
#: The server's default: on (llama-server's is off). Draft lengths follow measured acceptance
#: and step costs so that text that does not repeat, and a full batch, keep plain decoding's
#: speed: on a loaded machine bench_speculative.py gave 1.03x at C=8 and 1.59x on free text;
#: to be confirmed on a quiet one (the closing note of issue 23).
DEFAULT_SPEC_TYPE = "ngram-simple"


def parse_spec_type(text: str) -> str:
    """One of :data:`SPEC_TYPES` (ValueError naming the others llama-server has, which are not offered)."""
    value = str(text).strip().lower()
    if value not in SPEC_TYPES:
        raise ValueError(f"speculative decoding type must be one of {', '.join(SPEC_TYPES)}, not {text!r} "
                         "(llama-server's draft-model and other n-gram types are not offered)")
    return value


def _count(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ParameterError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}", name)
    return value


def check_draft_limits(draft_max: int | None, draft_min: int | None,
                       names: tuple[str, str] = ("draft_max", "draft_min")) -> None:
    """A request's own limits: None (the engine's) or an integer in [0, :data:`MAX_DRAFT`]
    (``ParameterError`` naming the field as ``names`` spell them)."""
    for name, value in zip(names, (draft_max, draft_min)):
        if value is not None:
            _count(name, value, 0, MAX_DRAFT)


@dataclass(frozen=True)
class Speculation:
    """The engine's speculation defaults (a request may set its own limits).

    ``draft_max``: the most draft tokens per step for one sequence (0: off, default).
    ``draft_min``: tokens drafted whenever the lookup proposes that many, whatever the
    measured costs say (0, default: acceptance and costs decide alone; ``draft_min =
    draft_max`` drafts every proposal whole, as llama-server does). ``ngram_size``:
    tokens looked up (default :data:`DEFAULT_NGRAM_SIZE`).
    """

    draft_max: int = 0
    draft_min: int = 0
    ngram_size: int = DEFAULT_NGRAM_SIZE

    def __post_init__(self) -> None:
        check_draft_limits(self.draft_max, self.draft_min)
        _count("ngram_size", self.ngram_size, 1, MAX_NGRAM_SIZE)

    @property
    def enabled(self) -> bool:
        return self.draft_max > 0

    @classmethod
    def of_type(cls, spec_type: str, draft_max: int, draft_min: int, ngram_size: int) -> Speculation:
        """The server's ``--spec-type`` with its limits (``none``: off whatever the limits)."""
        on = parse_spec_type(spec_type) != "none"
        return cls(draft_max if on else 0, draft_min if on else 0, ngram_size)

    @classmethod
    def of(cls, draft_model: LlamaDraftModel | None) -> Speculation:
        """``Llama(draft_model=...)``'s speculation: off for None; a
        :class:`LlamaPromptLookupDecoding`'s n-gram size and draft length otherwise."""
        if draft_model is None:
            return cls()
        if not isinstance(draft_model, LlamaPromptLookupDecoding):
            raise TypeError("draft_model must be a LlamaPromptLookupDecoding: drafts are n-gram lookups made "
                            f"and verified in the engine (C++), not {type(draft_model).__name__} calls per token")
        return cls(draft_max=draft_model.num_pred_tokens, ngram_size=draft_model.max_ngram_size)

    def to_core(self) -> Any:
        c = _core.SpecConfig()
        c.n_max, c.n_min, c.ngram_n = self.draft_max, self.draft_min, self.ngram_size
        return c


class LlamaDraftModel:
    """llama-cpp-python's draft model base: ``draft(input_ids) -> candidate next tokens``.

    Only :class:`LlamaPromptLookupDecoding` configures ``Llama(draft_model=...)``: the
    engine drafts in C++ and cannot call Python for every token.
    """

    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError


class LlamaPromptLookupDecoding(LlamaDraftModel):
    """Prompt lookup (llama-cpp-python's name): ``Llama(draft_model=LlamaPromptLookupDecoding(...))``.

    ``max_ngram_size``: tokens looked up (default 2); ``num_pred_tokens``: most draft
    tokens per step (default 10). The engine looks up exactly ``max_ngram_size`` tokens,
    at their most recent earlier occurrence (llama-cpp-python tries every size down to 1,
    earliest occurrence first); calling the object runs llama-cpp-python's lookup itself.
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
        empty array when no suffix n-gram occurred before (llama-cpp-python's lookup)."""
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
