"""The sampling parameters of one request: one type, checked in one place.

Built from llama-cpp-python's keywords (:meth:`SamplingParams.from_kwargs`, used
by ``Llama``) and, with the same rules, from an HTTP body. Every value is
checked here, so a bad one is a ``ValueError`` naming it before any work
starts, never a silent default or a crash inside llama.cpp.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _core
from .errors import ParameterError, utf8

__all__ = ["IGNORED_KNOBS", "SamplingParams", "next_call_seed"]

#: llama-cpp-python keywords that llama.cpp no longer implements, with the value
#: that means "off". Another value is accepted with a warning, not silently.
IGNORED_KNOBS = {
    "tfs_z": 1.0,  # tail-free sampling was removed from llama.cpp (2024)
    "penalize_nl": True,  # the newline exemption from penalties was removed with it
}

#: llama-cpp-python's seed meaning "draw a random one".
RANDOM_SEED = 0xFFFFFFFF


def next_call_seed(seed: int) -> int:
    """The seed of the next completion call after ``seed``, as llama-cpp-python draws it.

    llama-cpp-python seeds each completion that names no seed with a number drawn
    from ``random.Random(previous seed)`` (0 to 2**32 inclusive) and keeps it as the
    new seed: successive calls differ, yet a run started from the same seed (or a
    restored state) repeats. The same draw here keeps runs identical to theirs.
    """
    import random

    return random.Random(seed).randint(0, 2**32)


def _number(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(f"{name} must be a number, not {value!r}", name)
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be finite, not {value}", name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ParameterError(f"{name} must be in {bounds}, not {value:g}", name)
    return value


def _bias(token: int, value: Any) -> float:
    """A ``logit_bias`` value as llama-cpp-python takes it: any float added to the logit.

    -100 or less (OpenAI's "ban"), and -inf, become -inf: the token is never chosen.
    NaN and +inf are refused (+inf would leave every other token impossible and the
    probabilities undefined). The HTTP API keeps OpenAI's [-100, 100] range itself.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(f"logit_bias[{token}] must be a number, not {value!r}", "logit_bias")
    value = float(value)
    if math.isnan(value) or value == float("inf"):
        raise ParameterError(f"logit_bias[{token}] must be a finite number or -inf, not {value}", "logit_bias")
    return float("-inf") if value <= -100.0 else value


def _integer(name: str, value: Any, lo: int | None = None, hi: int | None = None, param: str | None = None) -> int:
    """``value`` as an int in [lo, hi]; ``ParameterError`` naming ``param`` (default: ``name``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ParameterError(f"{name} must be an integer, not {value!r}", param or name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ParameterError(f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}], not {value}", param or name)
    return int(value)


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are chosen. Defaults are llama-cpp-python's ``create_completion`` ones.

    ``temperature`` 0 is greedy. ``top_k`` 0 and ``top_p``/``typical_p`` 1 and
    ``min_p`` 0 switch those filters off. Penalties look at the last
    ``penalty_last_n`` tokens (-1: the whole context). ``seed`` None uses the
    ``Llama``'s seed. ``grammar`` is GBNF text (``grammar_root`` its start
    rule); a chat template's tool-call grammar may be ``grammar_lazy`` (it
    applies from the first match of a ``grammar_trigger_patterns`` regex or a
    ``grammar_trigger_tokens`` token on) and may first consume
    ``grammar_prefill``, prompt text it expects (:class:`RenderedChat` sets
    these four). ``logit_bias`` maps token ids to additive biases: any float, -100 or less (or -inf) bans the token.
    ``mirostat_mode`` 1 or 2 replaces the filters by Mirostat v1/v2.
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    grammar: str | None = None
    grammar_root: str = "root"
    grammar_lazy: bool = False
    grammar_trigger_patterns: tuple[str, ...] = ()
    grammar_trigger_tokens: tuple[int, ...] = ()
    grammar_prefill: str = ""
    logit_bias: tuple[tuple[int, float], ...] = field(default_factory=tuple)
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once, here
        set_(self, "temperature", _number("temperature", self.temperature, 0.0))
        set_(self, "top_k", _integer("top_k", self.top_k, 0))
        set_(self, "top_p", _number("top_p", self.top_p, 0.0, 1.0))
        set_(self, "min_p", _number("min_p", self.min_p, 0.0, 1.0))
        set_(self, "typical_p", _number("typical_p", self.typical_p, 0.0, 1.0))
        set_(self, "repeat_penalty", _number("repeat_penalty", self.repeat_penalty, 0.0))
        set_(self, "frequency_penalty", _number("frequency_penalty", self.frequency_penalty, -2.0, 2.0))
        set_(self, "presence_penalty", _number("presence_penalty", self.presence_penalty, -2.0, 2.0))
        set_(self, "penalty_last_n", _integer("penalty_last_n", self.penalty_last_n, -1))
        if self.seed is not None:
            set_(self, "seed", _integer("seed", self.seed, -(2**63), 2**64 - 1) & 0xFFFFFFFF)
        if self.grammar is not None:
            if not isinstance(self.grammar, str) or not self.grammar.strip():
                raise ParameterError("grammar must be a non-empty GBNF string", "grammar")
            if not isinstance(self.grammar_root, str):
                raise ParameterError(f"grammar_root must be a rule name, not {self.grammar_root!r}", "grammar_root")
            utf8(self.grammar, "grammar")
            utf8(self.grammar_root, "grammar_root")
            try:
                _core.check_grammar(self.grammar, self.grammar_root)  # llama.cpp's parser, its message
            except ValueError as exc:
                raise ParameterError(str(exc), "grammar") from None
        set_(self, "mirostat_mode", _integer("mirostat_mode", self.mirostat_mode, 0, 2))
        set_(self, "mirostat_tau", _number("mirostat_tau", self.mirostat_tau, 0.0))
        set_(self, "mirostat_eta", _number("mirostat_eta", self.mirostat_eta, 0.0))
        bias = []
        for token, value in self.logit_bias:
            token = _integer("logit_bias key", int(token) if isinstance(token, str) and token.isdigit() else token, 0,
                             param="logit_bias")
            bias.append((token, _bias(token, value)))
        set_(self, "logit_bias", tuple(bias))

    @property
    def greedy(self) -> bool:
        """True when the choice is the plain argmax (temperature 0, nothing reshaping the logits)."""
        return self.temperature == 0 and not self.logit_bias and self.grammar is None and self.repeat_penalty == 1.0 \
            and self.frequency_penalty == 0.0 and self.presence_penalty == 0.0

    @classmethod
    def from_kwargs(cls, *, temperature: float | None = None, temp: float | None = None,
                    logit_bias: Mapping[Any, float] | None = None, grammar: Any = None,
                    **kw: Any) -> SamplingParams:
        """From llama-cpp-python's keywords (``temp`` is ``generate``'s name for temperature).

        ``grammar`` may be GBNF text or a ``LlamaGrammar``. Keywords llama.cpp
        dropped (:data:`IGNORED_KNOBS`) warn when set to anything but "off";
        any other unknown keyword is a ``TypeError``.
        """
        for name, off in IGNORED_KNOBS.items():
            value = kw.pop(name, off)
            if value != off:
                warnings.warn(f"{name}={value!r} has no effect: llama.cpp no longer implements it",
                              RuntimeWarning, stacklevel=3)
        unknown = set(kw) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unexpected sampling keyword(s): {', '.join(sorted(unknown))}")
        if temperature is None:
            temperature = 0.8 if temp is None else temp
        root = "root"
        if grammar is not None and not isinstance(grammar, str):
            grammar, root = grammar.grammar, grammar.root
        bias = tuple((k, v) for k, v in (logit_bias or {}).items())
        if "mirostat_mode" in kw and kw["mirostat_mode"] is None:
            kw["mirostat_mode"] = 0
        return cls(temperature=temperature, grammar=grammar, grammar_root=root, logit_bias=bias, **kw)

    def to_core(self, default_seed: int) -> Any:
        """The compiled core's ``SamplerParams`` (``default_seed`` when ``seed`` is None)."""
        p = _core.SamplerParams()
        p.temperature = self.temperature
        p.top_k = self.top_k
        p.top_p = self.top_p
        p.min_p = self.min_p
        p.typical_p = self.typical_p
        p.repeat_penalty = self.repeat_penalty
        p.frequency_penalty = self.frequency_penalty
        p.presence_penalty = self.presence_penalty
        p.penalty_last_n = self.penalty_last_n
        p.seed = (default_seed if self.seed is None else self.seed) & 0xFFFFFFFF
        if self.grammar is not None:
            p.grammar = self.grammar
            p.grammar_root = self.grammar_root
            p.grammar_lazy = self.grammar_lazy
            p.grammar_trigger_patterns = list(self.grammar_trigger_patterns)
            p.grammar_trigger_tokens = list(self.grammar_trigger_tokens)
            p.grammar_prefill = self.grammar_prefill
        p.logit_bias = list(self.logit_bias)
        p.mirostat = self.mirostat_mode
        p.mirostat_tau = self.mirostat_tau
        p.mirostat_eta = self.mirostat_eta
        return p
