"""Prompt-lookup drafts (llama-cpp-python's ``LlamaPromptLookupDecoding``).

A draft model proposes the tokens that followed the latest occurrence of the
last n-gram in the text so far: rewriting, editing code or quoting a document
repeat long stretches of the prompt, which such a lookup finds for free.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._numpy import numpy as _numpy

if TYPE_CHECKING:
    import numpy as np

__all__ = ["LlamaDraftModel", "LlamaPromptLookupDecoding", "SpeculativeDecoder"]


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


class SpeculativeDecoder:
    """Completions with drafts (``Llama(draft_model=...)``): one sequence on its own context.

    Each step decodes the last sampled token together with the draft in one batch
    (logits for every position), samples position by position with the request's
    own llama.cpp sampler chain, keeps the draft tokens up to the first one the
    sampler did not choose and drops the rest from the KV cache. Every output token
    is the one the chain samples after the accepted prefix, so the text is what
    plain decoding would sample (exactly so when greedy); only the number of
    decode calls changes.

    ``model``: the ``_core.Model``; ``config``: the Llama's context (a copy with a
    full sliding-window cache is made, so rejected tokens can be cut on models such
    as Gemma 3); ``draft``: the draft model.
    """

    def __init__(self, model: Any, config: Any, draft: LlamaDraftModel) -> None:
        import dataclasses
        import threading

        from . import _core

        self.draft = draft
        self.model = model
        self._ctx = _core.Context(model, dataclasses.replace(config, swa_full=True, n_seq_max=1).to_core())
        self._busy = threading.Lock()
        #: Counters since creation: decode steps, draft tokens proposed and accepted.
        self.stats = {"steps": 0, "drafted": 0, "accepted": 0}

    def accepts(self, request: Any) -> bool:
        """True when this path can serve ``request``: logprobs and Python hooks use the engine."""
        return request.logprobs is None and request.logits_processor is None and request.stopping_criteria is None

    def cancel(self) -> None:
        self._ctx.cancel()

    def try_run(self, request: Any, default_seed: int) -> Iterator[Any] | None:
        """The request's pieces, or None when a speculative generation is already running
        (the caller then uses the engine: a paused stream must not block another call)."""
        if not self._busy.acquire(blocking=False):
            return None
        return self._run(request, default_seed)

    def _run(self, request: Any, default_seed: int) -> Iterator[Any]:
        from . import _core
        from .engine import Piece
        from .llama_cache import longest_token_prefix
        from .responses import usage
        from .stops import StopMatcher

        np = _numpy()
        ctx, prompt = self._ctx, list(request.prompt)
        try:
            ctx.reset_cancel()
            sampler = _core.Sampler(self.model, request.sampling.to_core(default_seed))
            keep = min(longest_token_prefix(ctx.tokens, prompt), len(prompt) - 1)  # the last one gives logits
            if not ctx.truncate(keep):
                keep = 0  # the cache could not be cut there and was cleared
            room = ctx.n_ctx - len(prompt)
            limit = room if request.max_tokens is None or request.max_tokens <= 0 else min(request.max_tokens, room)
            stops, history, generated, finish = StopMatcher(request.stop), prompt, [], None

            def emit(t: int) -> tuple[str, str | None]:
                generated.append(t)
                history.append(t)
                ready, hit = stops.feed(ctx.push_text(t).decode("utf-8", errors="replace"))
                return ready, "stop" if hit else "length" if len(generated) >= limit else None

            try:
                ctx.eval(prompt[keep:], False)
                accepted: list[int] = []
                tok, eog = ctx.sample(sampler)
                while finish is None:
                    for t, t_eog in [*((a, False) for a in accepted), (tok, eog)]:
                        if t_eog and not request.ignore_eos:
                            finish = "stop"
                            break
                        ready, finish = emit(t)
                        yield Piece(ready, [t], None, None, usage(len(prompt), len(generated)))
                        if finish is not None:
                            break
                    if finish is None:
                        accepted, tok, eog = self._step(ctx, sampler, history, tok, limit - len(generated), np)
            except _core.Cancelled:
                finish = "cancelled"
            tail = ctx.flush_text().decode("utf-8", errors="replace")
            if not stops.stopped and tail:
                stops.text += tail
            yield Piece(stops.release_all(), [], None, finish, usage(len(prompt), len(generated)), 0, stops.matched)
        finally:
            self._busy.release()

    def _step(self, ctx: Any, sampler: Any, history: list[int], tok: int, budget: int,
              np: Any) -> tuple[list[int], int, bool]:
        """Decode ``tok`` (the last of ``history``) with a draft of at most ``budget - 1``
        tokens; return the accepted draft tokens and the next sampled token (not decoded)."""
        draft = [int(t) for t in self.draft(np.array(history, dtype=np.intc))][: max(0, budget - 1)]
        draft = draft[: max(0, ctx.n_ctx - len(ctx.tokens) - 2)]  # room for tok and the drafts
        base = len(ctx.tokens)
        ctx.eval([tok, *draft], bool(draft))
        self.stats["steps"] += 1
        self.stats["drafted"] += len(draft)
        j = 0
        while True:
            nxt, eog = ctx.sample(sampler, ctx.logits(j) if draft else None)
            if j < len(draft) and nxt == draft[j] and not eog:
                j += 1
                continue
            break
        self.stats["accepted"] += j
        ctx.truncate(base + 1 + j)  # tok and the accepted drafts stay
        return draft[:j], nxt, eog
