"""The build metadata recorded in the package, and the import-time ISA guard.

``build_info.json`` is written by CMake when the package is built (see
``cmake/write_build_info.py``). A native build lists the ISA extensions its
compiler was allowed to use; :func:`check_cpu` compares them with the running
CPU before any compiled code is loaded.
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from typing import Any

__all__ = ["BuildMismatchError", "build_info", "check_cpu", "cpu_flags", "missing_features"]

#: Set to a comma-separated list of flags to pretend the CPU lacks them (tests, demos).
HIDE_FLAGS_ENV = "SARAI_HIDE_CPU_FLAGS"


class BuildMismatchError(ImportError):
    """This native build needs CPU instructions the running CPU does not have."""


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("build_info.json").read_text()
    return json.loads(text)


def build_info() -> dict[str, Any]:
    """How this copy of sarai-llama was built (a fresh dict each call).

    Keys: ``build_type`` ("native" or "portable"), ``date`` (UTC, ISO 8601),
    ``hostname``, ``cpu_model``, ``cpu_flags`` (of the build machine),
    ``isa_flags`` and ``isa_features`` (what the compiler could use outside
    the CPU variant modules), ``cpu_variants`` (portable: the variants shipped),
    ``cmake_flags``, ``llama_version`` (commit, build number), ``compiler``,
    ``reproducible`` (False for native builds), ``lto``, ``blas`` (None when
    off), ``optimal_threads`` (the *build machine's* answer; at run time use
    :func:`sarai_llama.optimal_threads`), ``python``, ``sarai_llama``.
    """
    return json.loads(json.dumps(_load()))


def cpu_flags() -> set[str]:
    """ISA flags of the running CPU, as Linux names them in /proc/cpuinfo.

    Asked of the CPU itself (CPUID and XCR0, in the baseline-compiled
    ``_cpuid`` module) where possible: /proc/cpuinfo describes the host under
    emulation. Elsewhere: /proc/cpuinfo, then py-cpuinfo. Flags listed in
    ``$SARAI_HIDE_CPU_FLAGS`` are removed, so the guard can be exercised on a
    machine that has everything.
    """
    flags: set[str] = set()
    try:
        from . import _cpuid

        found = _cpuid.features()
        if found is not None:
            flags = set(found)
    except ImportError:
        pass
    if not flags:
        flags = _os_cpu_flags()
    hidden = {f.strip() for f in os.environ.get(HIDE_FLAGS_ENV, "").split(",") if f.strip()}
    return flags - hidden


def _os_cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags") or line.startswith("Features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        import cpuinfo

        return set(cpuinfo.get_cpu_info().get("flags", []))
    except Exception:  # pragma: no cover - exotic platforms
        return set()


def missing_features(info: dict[str, Any] | None = None, flags: set[str] | None = None) -> list[str]:
    """The ISA features the build uses that the running CPU lacks (empty when it can run)."""
    info = _load() if info is None else info
    needed = info.get("isa_features") or []
    have = cpu_flags() if flags is None else flags
    if not have:  # unknown CPU: do not refuse on a guess
        return []
    return sorted(set(needed) - have)


def check_cpu() -> None:
    """Raise :class:`BuildMismatchError` if this build cannot run on this CPU.

    Called by ``import sarai_llama`` before the extension module is loaded.
    """
    info = _load()
    if info.get("build_type") != "native":
        return
    missing = missing_features(info)
    if missing:
        raise BuildMismatchError(
            "this sarai-llama is a native build for "
            f"'{info.get('cpu_model', '?')}' ({info.get('hostname', '?')}, {info.get('date', '?')}) and uses "
            f"CPU instructions this CPU lacks: {', '.join(missing)}. "
            "Rebuild it here with `make install-optimized` "
            "(pip install --no-cache-dir --config-settings=native=true .), "
            "or install the portable build with `make install-fast`."
        )
