"""How the zero-compile wheel's OpenMP threads wait between parallel regions, chosen before
the OpenMP runtime loads (it reads ``OMP_WAIT_POLICY`` once, when ``_core`` pulls it in).

The wheel carries LLVM's libomp (``sarai_llama.libs/libomp-*.so``, put there by auditwheel).
Left at its default, its threads go to sleep between a token's graph computations and the
next, and each token pays their wake-ups: measured on a 2-core EPYC VM (Llama-3.2-3B shape,
Q4_K_M, 2 threads, ``tools/bench_builds.py``, rounds interleaved), the wheel generated at 0.83x
to 0.88x of the native build on idle cores and at 1.03x with ``OMP_WAIT_POLICY=active``; with
a busy-looping process beside it on the same cores, active waiting lost nothing (8.83 vs 8.94
tok/s), because libomp's active waiting yields the core. GNU OpenMP (the native and source
builds, built with gcc) is the opposite case: its active waiting spins without yielding and
collapses under load (docs/architecture.md, "Measured at real sizes"), so it is left alone.
A value the user set (``OMP_WAIT_POLICY`` or ``KMP_BLOCKTIME``) always wins.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["choose_wait_policy"]


def choose_wait_policy(package_dir: str | os.PathLike[str] | None = None,
                       environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set ``OMP_WAIT_POLICY=active`` in ``environ`` (default ``os.environ``) when the package at
    ``package_dir`` (default: this one) carries LLVM's libomp and the user set neither it nor
    ``KMP_BLOCKTIME``. Returns ``{"runtime", "policy", "reason"}``: what was decided and why."""
    env = os.environ if environ is None else environ
    here = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parent
    bundled = any((here.parent / f"{here.name}.libs").glob("libomp*.so*"))
    if not bundled:
        return {"runtime": "not the wheel's libomp", "policy": env.get("OMP_WAIT_POLICY", "default"),
                "reason": "left as it is: GNU OpenMP's active waiting spins without yielding and collapses "
                          "when the cores are shared"}
    for var in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME"):
        if var in env:
            return {"runtime": "libomp", "policy": env.get("OMP_WAIT_POLICY", "default"),
                    "reason": f"{var} is set by the environment"}
    env["OMP_WAIT_POLICY"] = "active"
    return {"runtime": "libomp", "policy": "active",
            "reason": "LLVM libomp's sleeping threads cost every token their wake-up (0.83-0.88x of native "
                      "at 3B on idle cores, 1.03x active), and its active waiting yields under load"}
