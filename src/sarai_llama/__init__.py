"""sarai-llama: llama.cpp for Python on CPUs.

``build_info()`` says how the compiled core was built; importing the package
first checks that this CPU can run it (a native build on a CPU without the
instructions it was compiled for raises ImportError instead of crashing).
"""

from ._build_info import BuildMismatchError, build_info, check_cpu
from ._version import __version__

check_cpu()  # before the extension is loaded: never SIGILL

import os as _os

from ._openmp import choose_wait_policy

#: The OpenMP wait policy chosen before the core loads, and why (see _openmp.py).
OPENMP = choose_wait_policy()

from . import _core  # noqa: E402  (after the OpenMP policy: the runtime reads it when it loads)

#: Which CPU backend runs: {"variant", "score", "reason"} (see system_info()).
try:
    BACKEND = _core.init_backends(
        _os.path.join(_os.path.dirname(__file__), "lib"), _os.environ.get("SARAI_CPU_VARIANT", "").strip()
    )
except (ValueError, RuntimeError) as _exc:
    raise ImportError(f"sarai_llama cannot load its CPU backend: {_exc}") from _exc
from ._numpy import NumpyUnavailableError
from ._system import system_info
from .errors import ModelLoadError
from .grammar import LlamaGrammar
from .hooks import (
    LogitsProcessor,
    LogitsProcessorList,
    MinTokensLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
)
from .llama import LLAMA_DEFAULT_SEED, Llama, LlamaState
from .llama_cache import BaseLlamaCache, LlamaCache, LlamaDiskCache, LlamaRAMCache
from .llama_tokenizer import BaseLlamaTokenizer, LlamaTokenizer
from .threads import get_optimal_threads, optimal_threads

Cancelled = _core.Cancelled

__all__ = [
    "LLAMA_DEFAULT_SEED",
    "BaseLlamaCache",
    "BaseLlamaTokenizer",
    "BuildMismatchError",
    "Cancelled",
    "Llama",
    "LlamaCache",
    "LlamaDiskCache",
    "LlamaGrammar",
    "LlamaRAMCache",
    "LlamaState",
    "LlamaTokenizer",
    "LogitsProcessor",
    "LogitsProcessorList",
    "MinTokensLogitsProcessor",
    "ModelLoadError",
    "NumpyUnavailableError",
    "StoppingCriteria",
    "StoppingCriteriaList",
    "__version__",
    "build_info",
    "check_cpu",
    "get_optimal_threads",
    "optimal_threads",
    "system_info",
]
