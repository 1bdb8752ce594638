"""How many threads llama.cpp should use here: one policy, :func:`choose_threads`.

``optimal_threads`` / ``get_optimal_threads`` (the design's names) and the CLI's
``info``, ``doctor`` and ``bench`` give the same count as ``choose_threads`` does
for ``Llama`` and ``serve``: by default every usable physical core (mode "max").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from . import cpu
from .tune_store import load_saved

__all__ = ["DEFAULT_MODE", "MODES", "ThreadChoice", "choose_threads", "explain_job_threads", "explain_threads",
           "get_optimal_threads", "optimal_threads"]

#: share of the usable cores each mode takes
MODES = {"max": 1.0, "balanced": 0.75, "low": 0.5, "single": 0.0}


def _scaled(usable: int, mode: str) -> int:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "single":
        return 1
    if mode == "balanced" and usable == 4:
        return 3  # the design's small-CPU rule
    return max(1, math.floor(usable * MODES[mode]))


#: The mode when ``SARAI_THREAD_MODE`` names none: every usable physical core. On a
#: dedicated machine or a pod's CPU quota, idle cores buy nothing.
DEFAULT_MODE = "max"


def explain_threads(mode: str = DEFAULT_MODE) -> tuple[int, str]:
    """(threads, reason) for ``mode`` on the CPUs this process may use right now."""
    usable, why = cpu.usable_cpus()
    n = _scaled(usable, mode)
    return n, f"{n} of {usable} ({mode}): {why}"


def optimal_threads(mode: str = DEFAULT_MODE) -> int:
    """Threads for llama.cpp on this machine, now.

    The usable CPUs are min(physical P-cores in the affinity mask, floor(cgroup
    CPU quota)), at least 1. ``mode`` takes a share of them: ``max`` (100%, the
    default, as :func:`choose_threads`), ``balanced`` (75%; 4 cores give 3, to
    leave room for other work), ``low`` (50%), ``single`` (1).
    """
    return explain_threads(mode)[0]


def explain_job_threads(job_type: str | None = None, default_mode: str = DEFAULT_MODE) -> tuple[int, str, list[str]]:
    """(threads, reason, cuts) for a job under the environment's policy.

    ``cuts`` names each requested count that was lowered to what this process may
    use (e.g. ``CODING_THREADS=16`` in a pod limited to 8 CPUs): more threads than
    the CFS quota allows only get throttled, which costs far more than it gives.
    """
    mode = os.environ.get("SARAI_THREAD_MODE", default_mode).strip().lower() or default_mode
    cuts: list[str] = []
    usable, why = cpu.usable_cpus()
    if mode == "auto" and job_type:
        var = f"{job_type.upper()}_THREADS"
        raw = os.environ.get(var)
        mode = "balanced"
        if raw:
            try:
                asked = max(1, int(raw))
            except ValueError as exc:
                raise ValueError(f"{var}={raw!r} is not an integer") from exc
            n, reason = min(asked, usable), f"{var}={asked}"
            if asked > usable:
                cuts.append(f"{var}={asked} exceeds the {usable} usable CPUs ({why}): {job_type} jobs get {usable}")
                reason += f", cut to {usable} ({why})"
        else:
            n, reason = explain_threads(mode)
    else:
        n, reason = explain_threads("balanced" if mode == "auto" else mode)
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0 and int(omp) < n:
        n, reason = int(omp), f"{reason}; OMP_NUM_THREADS={omp} caps it"
    return n, reason, cuts


def get_optimal_threads(job_type: str | None = None, default_mode: str = DEFAULT_MODE) -> int:
    """The design's entry point: threads for a job, honouring the environment.

    ``SARAI_THREAD_MODE`` picks the mode (``max``, ``balanced``, ``low``,
    ``single``, or ``auto``); with ``auto`` and a ``job_type``, ``<JOB>_THREADS``
    (e.g. ``CODING_THREADS=6``) wins, up to the CPUs this process may use
    (affinity and cgroup quota: see :func:`explain_job_threads`).
    ``OMP_NUM_THREADS`` caps the answer.
    """
    return explain_job_threads(job_type, default_mode)[0]


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads a context gets, and why (``choose_threads``).

    ``tuned``: the saved ``sarai-llama tune`` record used (its ``repack`` choice applies
    to the model load too), else None. ``cuts``: job thread counts lowered to what this
    process may use (e.g. ``CODING_THREADS=16`` in a pod limited to 8 CPUs).
    """

    n_threads: int
    why: str
    tuned: dict[str, Any] | None = None
    cuts: tuple[str, ...] = ()


def choose_threads(value: int | str | None, job: str | None = None,
                   model_path: str | os.PathLike[str] | None = None) -> ThreadChoice:
    """Threads for a context, with the reason: one meaning of each word for ``Llama``,
    ``serve`` and the CLI.

    - an integer: that many;
    - None or ``"auto"``: the thread policy, :func:`explain_job_threads` (``job``)
      (every usable physical core, following affinity and the cgroup CPU quota, unless
      ``SARAI_THREAD_MODE`` / ``<JOB>_THREADS`` say otherwise);
    - ``"tuned"``: the result ``sarai-llama tune`` saved for this model file, build, CPU
      and job (``job`` or "default"), else the thread policy.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return ThreadChoice(value, "asked for")
    if isinstance(value, str) and value.isdigit():
        return ThreadChoice(int(value), "asked for")
    if value not in (None, "auto", "tuned"):
        raise ValueError(f"n_threads must be a positive integer, None/'auto' (the thread policy) or 'tuned' "
                         f"(the saved tune result), not {value!r}")
    if value == "tuned":
        if model_path is None:
            raise ValueError("n_threads='tuned' needs the model file (tune results are saved per model)")
        record = load_saved(model_path, job or "default")
        if record:
            return ThreadChoice(int(record["n_threads"]), f"saved tune result for job {job or 'default'!r}", record)
    n, why, cuts = explain_job_threads(job)
    if value == "tuned":
        why = f"no saved tune result for this model and job; {why}"
    return ThreadChoice(n, why, None, tuple(cuts))
