"""The configuration of one llama.cpp context: one type for ``Llama``, ``bench`` and ``tune``.

Every value is checked here with a message that names it, before llama.cpp
sees it (a thread count past ggml's limit crashed the process; a silently
clamped batch size surprised users).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _core

__all__ = ["DEFAULT_STEP_BUDGET_MS", "DEFAULT_UBATCH", "FLASH_ATTN", "KV_TYPES", "KV_TYPE_BYTES", "MAX_THREADS",
           "POOLING", "ContextConfig", "kv_cache_bytes", "kv_type", "pooling_id"]

# The vocabularies come from the binding's enums (``_core.KVType``, ``Pooling``, ``FlashAttn``),
# whose names and ids are llama.cpp's: no copy of a ggml or llama.cpp number lives in Python.
#: ggml type ids for KV-cache types (``type_k`` / ``type_v`` accept these names)
KV_TYPES = {name: int(v) for name, v in _core.KVType.__members__.items()}
#: llama.cpp's pooling ids by name (``pooling_type`` accepts these names)
POOLING = {name: int(v) for name, v in _core.Pooling.__members__.items()}
#: ``flash_attn`` keywords (llama-cpp-python's True/False/None, and "auto") -> llama.cpp's mode
FLASH_ATTN = {None: int(_core.FlashAttn.auto), "auto": int(_core.FlashAttn.auto), False: int(_core.FlashAttn.off),
              True: int(_core.FlashAttn.on)}
#: ggml's GGML_MAX_N_THREADS: its thread pool has room for no more.
MAX_THREADS = 512
#: The physical batch when none is given (llama.cpp's default), or ``n_batch`` if smaller.
DEFAULT_UBATCH = 512
#: The step time (ms) the engine aims at while sequences generate (``step_budget_ms``).
#: Two limits meet here: a stream's gap between tokens (the step plus HTTP) should stay
#: under 0.25 s, where a reader sees a stall, and each budgeted step also pays for the
#: streams' rows, so the smaller the steps the longer a long prompt takes. The largest gap
#: lands above the target (a prompt token's cost grows with its position; the HTTP side
#: adds its share). Measured with ``tools/bench_stall.py`` (Gemma 270M, 2 cores, 3
#: streams, 2,000 / 4,000-token prompts): at 200 ms the largest gap was 0.35 / 0.31 s, at
#: 120 ms 0.15 / 0.17 s (off: 1.4 / 1.5 s), and the long prompt took 1.6 / 1.5 times as
#: long as without a budget at 200 ms, 1.7 / 1.8 times at 120 ms. 120 keeps streams under
#: the stall limit; raise it (``--step-budget-ms``) to favour long prompts.
DEFAULT_STEP_BUDGET_MS = 120.0


#: Bytes per element of each KV type (a quantized block's bytes over its 32 elements; ggml's sizes).
KV_TYPE_BYTES = {name: _core.bytes_per_element(v) for name, v in _core.KVType.__members__.items()}


def kv_cache_bytes(meta: Mapping[str, Any], n_ctx: int, type_k: str, type_v: str) -> int:
    """The KV cache's size for ``n_ctx`` cells from a GGUF's metadata (0 when it lacks the facts).

    Every layer's keys and values at full length: an upper bound for sliding-window
    models (Gemma 2/3), whose windowed layers keep fewer cells.
    """
    def value(key: str) -> int | None:
        v = meta.get(key)
        try:
            return int(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None

    arch = str(meta.get("general.architecture", ""))  # the metadata's strings are str (bytes escaped)
    n_layer, n_embd = value(f"{arch}.block_count"), value(f"{arch}.embedding_length")
    n_head = value(f"{arch}.attention.head_count")
    if not (n_layer and n_embd and n_head):
        return 0
    n_head_kv = value(f"{arch}.attention.head_count_kv") or n_head
    k_len = value(f"{arch}.attention.key_length") or n_embd // n_head
    v_len = value(f"{arch}.attention.value_length") or n_embd // n_head
    per_cell = n_layer * n_head_kv * (k_len * KV_TYPE_BYTES[type_k] + v_len * KV_TYPE_BYTES[type_v])
    return int(n_ctx * per_cell)


def kv_type(value: str | int | None, f16_kv: bool = True) -> int:
    """A KV-cache type name ("f16", "q8_0", ...) or ggml id -> the ggml id (None: ``f16_kv``'s choice)."""
    if value is None:
        return KV_TYPES["f16"] if f16_kv else KV_TYPES["f32"]
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in KV_TYPES.values():
            raise ValueError(f"unknown KV cache type id {value}; expected one of {sorted(KV_TYPES.values())}")
        return value
    try:
        return KV_TYPES[str(value).lower()]
    except KeyError:
        raise ValueError(f"unknown KV cache type {value!r}; expected one of {', '.join(KV_TYPES)}") from None


def pooling_id(value: str | int) -> int:
    """A pooling name ("mean", "cls", ...) or llama.cpp id -> the id."""
    if isinstance(value, str):
        if value not in POOLING:
            raise ValueError(f"unknown pooling type {value!r}; expected one of {', '.join(POOLING)}")
        return POOLING[value]
    return int(value)


def _warn_oversubscribed(n_threads: int) -> None:
    """Warn when more threads are asked for than the CPUs this process may use, counted as the
    thread policy counts them (``cpu.usable_cpus``: physical cores in the affinity mask, the
    cgroup CPU quota): ggml's threads then wait for each other, or for a sibling, each step."""
    from . import cpu

    try:
        usable, why = cpu.usable_cpus()
    except OSError:  # no facts to judge by: say nothing
        return
    if n_threads > usable:
        warnings.warn(f"{n_threads} threads but this process may run on {usable} CPU(s) at full speed ({why}): "
                      "the threads will wait for each other (slower, not faster)", RuntimeWarning, stacklevel=4)


def _count(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}], not {value}")
    return value


@dataclass(frozen=True)
class ContextConfig:
    """One llama.cpp context.

    ``n_ctx``: tokens of context (0 = the model's training length). ``n_batch``:
    most tokens per decode call; ``n_ubatch``: the physical batch (None: 512 or
    ``n_batch`` if smaller; a value above ``n_batch`` is an error, not silently
    clamped; for embeddings it equals ``n_batch``, since a pooled input must fit
    one ubatch). ``n_threads`` / ``n_threads_batch``: generation / prompt threads
    (1 to ggml's 512; more than the CPUs this process may use warns: the threads
    would wait for each other). ``type_k``/``type_v``: ggml
    type ids (:func:`kv_type`, ``_core.KVType``). ``flash_attn``: a ``_core.FlashAttn``
    id (-1 auto, 0 off, 1 on). ``pooling``: a :data:`POOLING` id (``_core.Pooling``).
    ``n_seq_max``: sequences decoded together.
    ``step_budget_ms``: while some sequences generate, the engine gives a step only
    as many prompt tokens as its measured costs say fit in this many ms, so a long
    prompt does not stall the streams (0: off, prompts take ``n_batch``; a prompt
    with nothing else generating always takes ``n_batch``).
    """

    n_ctx: int = 512
    n_batch: int = 512
    n_ubatch: int | None = None
    n_threads: int = 1
    n_threads_batch: int | None = None
    type_k: int = KV_TYPES["f16"]
    type_v: int = KV_TYPES["f16"]
    flash_attn: int = FLASH_ATTN["auto"]
    embeddings: bool = False
    pooling: int = POOLING["unspecified"]
    swa_full: bool = False
    n_seq_max: int = 1
    step_budget_ms: float = DEFAULT_STEP_BUDGET_MS

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _count("n_ctx", self.n_ctx, 0)
        _count("n_batch", self.n_batch, 1)
        if self.n_ubatch is None:
            set_(self, "n_ubatch", min(DEFAULT_UBATCH, self.n_batch))
        _count("n_ubatch", self.n_ubatch, 1)
        if self.n_ubatch > self.n_batch and not self.embeddings:
            raise ValueError(f"n_ubatch ({self.n_ubatch}) must not exceed n_batch ({self.n_batch}): "
                             "a physical batch is part of a logical one")
        _count("n_threads", self.n_threads, 1, MAX_THREADS)
        if self.n_threads_batch is None:
            set_(self, "n_threads_batch", self.n_threads)
        _count("n_threads_batch", self.n_threads_batch, 1, MAX_THREADS)
        _warn_oversubscribed(max(self.n_threads, self.n_threads_batch))
        _count("n_seq_max", self.n_seq_max, 1, 256)  # llama.cpp's LLAMA_MAX_SEQ
        budget = self.step_budget_ms
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) \
                or budget < 0:
            raise ValueError(f"step_budget_ms must be a number of ms >= 0 (0: off), not {budget!r}")
        set_(self, "step_budget_ms", float(budget))
        if self.embeddings:
            set_(self, "n_ubatch", self.n_batch)
        set_(self, "type_k", kv_type(self.type_k))
        set_(self, "type_v", kv_type(self.type_v))
        if self.flash_attn not in FLASH_ATTN.values():
            raise ValueError(f"flash_attn must be -1 (auto), 0 or 1, not {self.flash_attn!r}")
        if self.flash_attn == FLASH_ATTN[False] and self.type_v not in (KV_TYPES["f32"], KV_TYPES["f16"], KV_TYPES["bf16"]):
            # llama.cpp refuses the context otherwise (its V transpose needs an unquantized type)
            raise ValueError("a quantized V cache (type_v) needs flash attention: flash_attn on or auto")
        if self.pooling not in POOLING.values():
            raise ValueError(f"unknown pooling type {self.pooling!r}; expected one of {', '.join(POOLING)}")

    @classmethod
    def from_keywords(cls, *, f16_kv: bool = True, type_k: str | int | None = None, type_v: str | int | None = None,
                      flash_attn: bool | str | None = None, pooling_type: str | int = "unspecified",
                      embeddings: bool = False, **fields: Any) -> ContextConfig:
        """A configuration from llama-cpp-python's keywords (the one place ``Llama``,
        ``serve`` and the CLI turn them into one): KV types by name or id (None:
        ``f16_kv``'s choice), ``flash_attn`` True/False/None/"auto", a pooling name or id
        ("unspecified" with ``embeddings`` means "mean"); other fields as the class."""
        if flash_attn not in FLASH_ATTN:
            raise ValueError(f"flash_attn must be True, False or None, not {flash_attn!r}")
        pooling = pooling_id(pooling_type)
        return cls(type_k=kv_type(type_k, f16_kv), type_v=kv_type(type_v, f16_kv), flash_attn=FLASH_ATTN[flash_attn],
                   embeddings=embeddings,
                   pooling=POOLING["mean"] if embeddings and pooling == POOLING["unspecified"] else pooling, **fields)

    @property
    def kv_layout(self) -> str:
        """What shapes a sequence's saved KV state besides the model (the state cache's identity)."""
        return f"type_k={self.type_k},type_v={self.type_v},flash_attn={self.flash_attn},swa_full={self.swa_full}"

    def to_core(self) -> Any:
        """The compiled core's ``ContextParams``."""
        p = _core.ContextParams()
        p.n_ctx = self.n_ctx
        p.n_batch = self.n_batch
        p.n_ubatch = self.n_ubatch
        p.n_threads = self.n_threads
        p.n_threads_batch = self.n_threads_batch
        p.type_k = self.type_k
        p.type_v = self.type_v
        p.flash_attn = self.flash_attn
        p.embeddings = self.embeddings
        p.pooling_type = self.pooling
        p.swa_full = self.swa_full
        p.n_seq_max = self.n_seq_max
        p.step_budget_ms = self.step_budget_ms
        return p
