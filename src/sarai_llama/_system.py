"""What llama.cpp reports about the running system."""

from __future__ import annotations

from typing import Any

from . import _core


def system_info() -> dict[str, Any]:
    """llama.cpp's run-time view: the CPU backend loaded and the features its kernels use.

    ``cpu_variant`` names the loaded CPU backend module (portable builds: e.g.
    "zen4", "haswell"; native builds: "static"), ``variant_reason`` says why it
    was chosen; ``openmp`` is the OpenMP wait policy set before the core loaded and
    its reason (``_openmp.choose_wait_policy``); ``features`` maps each feature llama.cpp prints (``AVX2``,
    ``AVX512``, ``LLAMAFILE``, ``OPENMP``, ...) to its value; ``raw`` is the line.
    """
    from . import BACKEND, OPENMP

    raw = _core.system_info()
    features: dict[str, str] = {}
    # llama.cpp prints "CPU : SSE3 = 1 | AVX2 = 1 | ... | OPENMP = 1 | REPACK = 1 |".
    for token in raw.split("|"):
        key, sep, value = token.rpartition(" = ")
        if sep:
            features[key.split(":")[-1].strip()] = value.strip()
    return {
        "llama_commit": _core.LLAMA_COMMIT,
        "cpu_variant": BACKEND["variant"],
        "variant_score": BACKEND["score"],
        "variant_reason": BACKEND["reason"],
        "openmp": dict(OPENMP),
        "backends": _core.backends(),
        "features": features,
        "raw": raw,
    }
