"""The manual loop over logits: ``Llama.eval`` -> ``Llama.sample`` -> ``Llama.eval`` ...

llama-cpp-python's low-level API on sequence 0 (:class:`ManualLoop`, a part that
``Llama`` holds and shows): ``eval``, ``sample``, ``generate``, ``input_ids``,
``scores``, ``save_state`` / ``load_state``.

``Llama.eval`` keeps the logits after the last evaluated token. A greedy
choice (temperature 0, nothing reshaping the logits but Python logits
processors) is the argmax of exactly those logits. Any other chain
(temperature, penalties, grammar, logit bias, mirostat) is llama.cpp's
sampler run by the engine for one token over the evaluated tokens: the engine
keeps their KV cache and decodes the last token again for its logits (one
token of work; llama-cpp-python's ``generate`` does the same after a restored
state).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._numpy import numpy as _numpy
from .engine import Engine, Request
from .inline import InlineRuns
from .llama_cache import LlamaState
from .sampling import SamplingParams

if TYPE_CHECKING:
    import numpy as np

    from .grammar import LlamaGrammar
    from .hooks import LogitsProcessorList, StoppingCriteriaList

__all__ = ["ManualLoop", "logits_to_logprobs", "sample_after_eval"]


def logits_to_logprobs(logits: Any, axis: int = -1) -> np.ndarray:
    """Log-softmax of ``logits`` along ``axis`` as float32 (a numerically stable
    log(softmax)); infinite maxima count as 0 so -inf rows stay -inf, not NaN."""
    np = _numpy()
    x = np.asarray(logits, dtype=np.single)
    peak = np.amax(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0).astype(np.single)
    shifted = np.subtract(x, peak, dtype=np.single)
    with np.errstate(divide="ignore"):  # a row of -inf has log(0) = -inf, as expected
        total = np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    return (shifted - total).astype(np.single)


def sample_after_eval(evaluated: list[int], last_logits: Sequence[float] | None, params: SamplingParams,
                      logits_processor: Any, idx: int | None, run: Callable[[Request], Iterable[Any]]) -> int:
    """One token after the ``evaluated`` tokens (see the module docstring).

    ``last_logits``: the logits after the last of them when still current (else None);
    ``idx``: the position whose logits are sampled, only the last evaluated one
    (``len(evaluated) - 1``, also what None means) keeps logits here; ``run`` runs a
    request on the engine and yields its pieces.
    """
    n = len(evaluated)
    if n == 0:
        raise ValueError("nothing is evaluated: call eval(tokens) before sample()")
    if idx is not None and int(idx) != n - 1:
        raise ValueError(f"idx={idx}: only the last evaluated position ({n - 1}) keeps its logits")
    if params.greedy and last_logits is not None:
        np = _numpy()
        logits = np.array(last_logits, dtype=np.single)
        if logits_processor is not None:
            logits = np.asarray(logits_processor(np.array(evaluated, dtype=np.intc), logits), dtype=np.single)
        return int(np.argmax(logits))
    request = Request(prompt=evaluated, sampling=params, max_tokens=1, ignore_eos=True,
                      logits_processor=logits_processor)
    tokens = [t for piece in run(request) for t in piece.tokens]
    if not tokens:
        raise RuntimeError("the engine ended the request without a token")
    return tokens[0]


#: ``generate``'s and ``sample``'s own keywords, which are not sampling parameters.
_NOT_SAMPLING = ("self", "tokens", "reset", "logits_processor", "stopping_criteria", "idx")


class ManualLoop:
    """Sequence 0 token by token, as llama-cpp-python's ``Llama`` offers it: a part that
    ``Llama`` holds (one per engine) and shows as its own ``eval``, ``sample``, ``generate``,
    ``input_ids``, ``scores``, ...

    ``engine``: the engine whose sequence 0 is the single-user cache; ``runs``: the
    holder's running requests (``sample`` and ``generate`` run theirs there, in the
    caller's thread); ``n_ctx`` / ``n_vocab``: the holder's context and vocabulary sizes;
    ``penalty_last_n``: tokens the repetition penalties look back on (the holder's
    ``last_n_tokens_size`` when it was created).
    """

    def __init__(self, engine: Engine, runs: InlineRuns, n_ctx: int, n_vocab: int, penalty_last_n: int) -> None:
        self._engine, self._runs, self._seq = engine, runs, engine.sequence(0)
        self._n_ctx, self._n_vocab, self._penalty_last_n = n_ctx, n_vocab, penalty_last_n
        self._eval_logits: collections.deque[list[float]] = collections.deque(maxlen=1)
        self._eval_at = -1  # n_tokens when eval_logits was computed (-1: never)

    def _run(self, request: Request) -> Iterator[Any]:
        return self._runs.run(self._engine, request)

    @property
    def eval_logits(self) -> collections.deque[list[float]]:
        """The logits after the last token :meth:`eval` evaluated (one row: llama-cpp-python
        keeps only the last too unless ``logits_all``); empty before any eval."""
        return self._eval_logits

    @property
    def input_ids(self) -> np.ndarray:
        """Tokens cached in sequence 0 (the prompt cache of single-user calls)."""
        np = _numpy()
        return np.array(self._seq.cached(), dtype=np.intc)

    @property
    def n_tokens(self) -> int:
        """How many tokens sequence 0 holds."""
        return len(self._seq.cached())

    @property
    def eval_tokens(self) -> collections.deque[int]:
        """The evaluated tokens of sequence 0."""
        return collections.deque(self._seq.cached(), maxlen=self._n_ctx)

    @property
    def scores(self) -> np.ndarray:
        """Logits kept from :meth:`eval`, one row per position: here only the last position's
        (shape ``(1, n_vocab)``; ``(0, n_vocab)`` before any eval). llama-cpp-python keeps
        rows only with ``logits_all``; every other row there is stale."""
        np = _numpy()
        return np.array(list(self._eval_logits), dtype=np.single).reshape(-1, self._n_vocab)

    def save_state(self, seed: int) -> LlamaState:
        """Sequence 0's tokens and KV state, with ``seed`` (the holder's)."""
        tokens, data = self._seq.state()
        return LlamaState(tuple(tokens), data, self._n_ctx, seed, self._seq.serves_from())

    def load_state(self, state: LlamaState) -> None:
        """Make ``state`` sequence 0's (its seed is the holder's to take)."""
        self._seq.set_state(state.llama_state, list(state.input_ids))

    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluate ``tokens`` after the ones cached in sequence 0; ``eval_logits[-1]`` then
        holds the logits after the last one (llama-cpp-python keeps only the last too
        unless ``logits_all``)."""
        self._eval_logits = collections.deque([self._seq.eval([int(t) for t in tokens])], maxlen=1)
        self._eval_at = self.n_tokens

    def sample(self, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
               temp: float = 0.80, repeat_penalty: float = 1.0, frequency_penalty: float = 0.0,
               presence_penalty: float = 0.0, tfs_z: float = 1.0, mirostat_mode: int = 0, mirostat_eta: float = 0.1,
               mirostat_tau: float = 5.0, penalize_nl: bool = True, logits_processor: LogitsProcessorList | None = None,
               grammar: LlamaGrammar | None = None, idx: int | None = None) -> int:
        """One token after the evaluated ones (:meth:`eval`), with the engine's seed (the
        object's); it is not evaluated. ``idx``: None or the last evaluated position (see the
        module docstring)."""
        params = SamplingParams.from_kwargs(penalty_last_n=self._penalty_last_n,
                                            **{k: v for k, v in locals().items() if k not in _NOT_SAMPLING})
        fresh = self._eval_logits[-1] if self._eval_logits and self._eval_at == self.n_tokens else None
        return sample_after_eval(self._seq.cached(), fresh, params, logits_processor, idx, self._run)

    def generate(self, tokens: Sequence[int], top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 typical_p: float = 1.0, temp: float = 0.80, repeat_penalty: float = 1.0, reset: bool = True,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0, tfs_z: float = 1.0,
                 mirostat_mode: int = 0, mirostat_tau: float = 5.0, mirostat_eta: float = 0.1,
                 penalize_nl: bool = True, logits_processor: LogitsProcessorList | None = None,
                 stopping_criteria: StoppingCriteriaList | None = None, grammar: LlamaGrammar | None = None,
                 seed: int | None = None) -> Iterator[int]:
        """Yield sampled tokens after ``tokens`` without end; end-of-generation tokens are yielded too.

        ``reset=False`` continues after the tokens cached in sequence 0. Closing
        the generator ends the request; no lock is held between tokens.
        """
        sampling = SamplingParams.from_kwargs(penalty_last_n=self._penalty_last_n,
                                              **{k: v for k, v in locals().items() if k not in _NOT_SAMPLING})
        prompt = [int(t) for t in tokens] if reset else self._seq.cached() + [int(t) for t in tokens]
        for piece in self._run(Request(prompt=prompt, sampling=sampling, max_tokens=None, ignore_eos=True,
                                       logits_processor=logits_processor, stopping_criteria=stopping_criteria)):
            yield from piece.tokens
