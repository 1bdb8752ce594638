"""The manual loop over logits: ``Llama.eval`` -> ``Llama.sample`` -> ``Llama.eval`` ...

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

from typing import TYPE_CHECKING, Any

from ._numpy import numpy as _numpy
from .engine import Request
from .sampling import SamplingParams

if TYPE_CHECKING:
    import numpy as np

    from .llama import Llama

__all__ = ["logits_to_logprobs", "sample_after_eval"]


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


def sample_after_eval(llama: Llama, params: SamplingParams, logits_processor: Any, idx: int | None) -> int:
    """One token after the tokens ``llama`` has evaluated (see the module docstring).

    ``idx``: the position whose logits are sampled; only the last evaluated one
    (``n_tokens - 1``, also what None means) keeps logits here.
    """
    engine = llama._eng()
    evaluated = engine.cached()
    n = len(evaluated)
    if n == 0:
        raise ValueError("nothing is evaluated: call eval(tokens) before sample()")
    if idx is not None and int(idx) != n - 1:
        raise ValueError(f"idx={idx}: only the last evaluated position ({n - 1}) keeps its logits")
    if params.greedy and llama._eval_at == n and llama.eval_logits:
        np = _numpy()
        logits = np.array(llama.eval_logits[-1], dtype=np.single)
        if logits_processor is not None:
            logits = np.asarray(logits_processor(np.array(evaluated, dtype=np.intc), logits), dtype=np.single)
        return int(np.argmax(logits))
    request = Request(evaluated, params, 1, [], None, True, logits_processor, None)
    tokens = [t for piece in llama._run(request) for t in piece.tokens]
    if not tokens:
        raise RuntimeError("the engine ended the request without a token")
    return tokens[0]
