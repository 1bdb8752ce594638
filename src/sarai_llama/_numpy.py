"""numpy, imported only by the APIs that hand out arrays, and only if it can run here.

Loading a model and generating text never touch numpy: the portable build runs
on every x86-64 CPU, but a numpy wheel is compiled for a baseline of its own
(numpy 2.4's is x86-64-v2 plus what its build assumed) and dies with SIGILL
on import where that baseline is missing. A SIGILL cannot be caught, so on a
CPU below x86-64-v3 (no AVX2) the first array API lets a forked child import
numpy before this process does, and turns a child killed by a signal into
:class:`NumpyUnavailableError` that says what happened and what still works.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import warnings
from types import ModuleType

__all__ = ["NumpyUnavailableError", "numpy"]

#: CPUID features of x86-64-v3; a CPU with all of them runs every numpy wheel
#: published so far, so there the child probe is skipped.
X86_64_V3 = frozenset({"avx", "avx2", "bmi1", "bmi2", "fma", "f16c", "movbe", "abm"})


class NumpyUnavailableError(ImportError):
    """An API that returns or takes numpy arrays was used where numpy cannot run."""


def _needs_probe() -> bool:
    try:
        from . import _cpuid
    except ImportError:  # not x86-64: numpy's wheels target the platform baseline there
        return False
    found = _cpuid.features()
    return found is not None and not X86_64_V3 <= set(found)


def _probe() -> str | None:
    """None when ``import numpy`` works in a forked copy of this process, else why not.

    A fork, not a new interpreter: under qemu-user a new interpreter would run on
    the host CPU (qemu does not follow exec), while a fork stays on the emulated
    one, as it stays on the real one everywhere else.
    """
    if not hasattr(os, "fork"):
        return None
    with warnings.catch_warnings():  # Python 3.12+ warns about fork in a threaded process;
        warnings.simplefilter("ignore", DeprecationWarning)  # the child only imports and exits
        pid = os.fork()
    if pid == 0:  # child: import, report by exit status, never return into the caller's code
        code = 0
        try:
            import numpy  # noqa: F401
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return f"importing it killed a test process with {name} (its wheel needs instructions this CPU lacks)"
    return None  # an import that fails with an exception fails the same, catchably, in this process


@functools.lru_cache(maxsize=1)
def _checked() -> ModuleType:
    if "numpy" not in sys.modules and _needs_probe():
        why = _probe()
        if why is not None:
            raise NumpyUnavailableError(
                f"this API needs numpy, and the numpy installed here cannot run on this CPU: {why}. "
                "Loading models, tokenizing and generating text work without it; for logits, "
                "logits processors and stopping criteria install a numpy built for this CPU "
                "(an older release or one built from source: pip install --no-binary numpy numpy)."
            )
    try:
        import numpy as np
    except ImportError as exc:
        raise NumpyUnavailableError(f"this API needs numpy ({exc}); pip install numpy") from exc
    return np


def numpy() -> ModuleType:
    """The numpy module, or :class:`NumpyUnavailableError` with the reason (checked once)."""
    return _checked()
