"""What llama.cpp reports about the running system."""

from __future__ import annotations

from typing import Any

from . import _core


def system_info() -> dict[str, Any]:
    """llama.cpp's run-time view: its version, backends and the CPU features its kernels use.

    ``features`` maps each feature llama.cpp prints (``AVX2``, ``AVX512``,
    ``LLAMAFILE``, ``OPENMP``, ...) to its value; ``raw`` is the unparsed line.
    """
    raw = _core.system_info()
    features: dict[str, str] = {}
    # llama.cpp prints "CPU : SSE3 = 1 | AVX2 = 1 | ... | OPENMP = 1 | REPACK = 1 |".
    for token in raw.split("|"):
        key, sep, value = token.rpartition(" = ")
        if sep:
            features[key.split(":")[-1].strip()] = value.strip()
    return {
        "llama_commit": _core.LLAMA_COMMIT,
        "backends": _core.backends(),
        "features": features,
        "raw": raw,
    }
