"""sarai-llama: llama.cpp for Python on CPUs.

``build_info()`` says how the compiled core was built; importing the package
first checks that this CPU can run it (a native build on a CPU without the
instructions it was compiled for raises ImportError instead of crashing).
"""

from ._version import __version__
from ._build_info import BuildMismatchError, build_info, check_cpu

check_cpu()  # before the extension is loaded: never SIGILL

import os as _os  # noqa: E402

from . import _core  # noqa: E402

#: Which CPU backend runs: {"variant", "score", "reason"} (see system_info()).
try:
    BACKEND = _core.init_backends(
        _os.path.join(_os.path.dirname(__file__), "lib"), _os.environ.get("SARAI_CPU_VARIANT", "").strip()
    )
except (ValueError, RuntimeError) as _exc:
    raise ImportError(f"sarai_llama cannot load its CPU backend: {_exc}") from _exc
from ._numpy import NumpyUnavailableError  # noqa: E402
from ._system import system_info  # noqa: E402
from .errors import ModelLoadError  # noqa: E402
from .grammar import LlamaGrammar  # noqa: E402
from .hooks import (  # noqa: E402
    LogitsProcessor,
    LogitsProcessorList,
    MinTokensLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
)
from .llama import LLAMA_DEFAULT_SEED, Llama, LlamaState  # noqa: E402
from .llama_cache import BaseLlamaCache, LlamaCache, LlamaDiskCache, LlamaRAMCache  # noqa: E402
from .llama_tokenizer import BaseLlamaTokenizer, LlamaTokenizer  # noqa: E402
from .threads import get_optimal_threads, optimal_threads  # noqa: E402

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
