"""The build metadata recorded in the package, and the import-time ISA guard.

``build_info.json`` is written by CMake when the package is built (see
``cmake/write_build_info.py``). A native build lists the ISA extensions its
compiler was allowed to use; :func:`check_cpu` compares them with the running
CPU before any compiled code is loaded.

Two views of a CPU's features exist and they can differ, so each field says
which one it holds:

* **CPUID** (with XCR0): what the processor executes. ``-march=native`` asks
  CPUID, so a native build's ``isa_features`` are a CPUID view, and the guard
  compares them with the running CPU's CPUID view (``_cpuid``, compiled for
  baseline x86-64). This is the view that decides SIGILL or not.
* **The kernel** (``/proc/cpuinfo``): what Linux chose to advertise. It can
  leave out a feature the processor still executes (:data:`KERNEL_MAY_HIDE`),
  and under qemu-user it describes the host, not the emulated CPU. The build
  records it as ``cpu_flags``, for people; the guard uses it only where CPUID
  cannot be asked, and then does not refuse on a flag the kernel is known to hide.
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from typing import Any

__all__ = ["KERNEL_MAY_HIDE", "BuildMismatchError", "build_info", "check_cpu", "cpu_flags", "missing_features"]

#: Set to a comma-separated list of flags to pretend the CPU lacks them (tests, demos).
HIDE_FLAGS_ENV = "SARAI_HIDE_CPU_FLAGS"

#: Features a Linux kernel leaves out of /proc/cpuinfo on some CPUs although
#: CPUID reports them and the instructions execute (no SIGILL), with the reason.
#: A native build of such a machine lists them in ``isa_features`` (the compiler
#: asked CPUID); ``cpu_flags`` lacks them. Compilers never emit these two on
#: their own (only their intrinsics do, which llama.cpp does not use).
KERNEL_MAY_HIDE = {
    "rdseed": "AMD Zen 5: Linux 6.15+ stops advertising RDSEED for an erratum (16/32-bit forms may return 0 "
              "as success); CPUID still reports it and the instruction runs",
    "rdrand": "AMD families 15h/16h with RDRAND broken after suspend: Linux stops advertising it",
}


class BuildMismatchError(ImportError):
    """This native build needs CPU instructions the running CPU does not have."""


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("build_info.json").read_text()
    return json.loads(text)


def build_info() -> dict[str, Any]:
    """How this copy of sarai-llama was built (a fresh dict each call).

    Keys: ``build_type`` ("native" or "portable"), ``date`` (UTC, ISO 8601),
    ``hostname``, ``cpu_model``, ``cpu_flags`` (the build machine's flags as
    its kernel listed them in /proc/cpuinfo: for people, never for the guard),
    ``isa_flags`` and ``isa_features`` (the cpuinfo names of what the compiler
    may emit outside the CPU variant modules; for ``-march=native`` that is the
    build CPU's CPUID view less AMX: what the running CPU must execute),
    ``cpu_variants`` (portable: the variants shipped),
    ``cmake_flags``, ``llama_version`` (commit, build number), ``compiler``,
    ``reproducible`` (False for native builds), ``lto``, ``blas`` (None when
    off), ``optimal_threads`` (the *build machine's* answer; at run time use
    :func:`sarai_llama.optimal_threads`), ``python``, ``sarai_llama``.
    """
    return json.loads(json.dumps(_load()))


def cpu_flags() -> set[str]:
    """ISA features the running CPU executes, under Linux's /proc/cpuinfo names.

    Asked of the CPU itself (CPUID and XCR0, in the baseline-compiled
    ``_cpuid`` module) where possible; elsewhere the kernel's view
    (/proc/cpuinfo, then py-cpuinfo). Flags listed in ``$SARAI_HIDE_CPU_FLAGS``
    are removed, so the guard can be exercised on a machine that has everything.
    """
    return _running_cpu()[0]


def _running_cpu() -> tuple[set[str], str]:
    """(features, "cpuid" | "kernel") for the running CPU, hidden flags removed."""
    flags: set[str] = set()
    source = "cpuid"
    try:
        from . import _cpuid

        found = _cpuid.features()
        if found is not None:
            flags = set(found)
    except ImportError:
        pass
    if not flags:
        flags, source = _os_cpu_flags(), "kernel"
    hidden = {f.strip() for f in os.environ.get(HIDE_FLAGS_ENV, "").split(",") if f.strip()}
    return flags - hidden, source


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


def missing_features(
    info: dict[str, Any] | None = None, flags: set[str] | None = None, source: str = "cpuid"
) -> list[str]:
    """The ISA features the build uses that the running CPU lacks (empty when it can run).

    ``flags`` defaults to the running CPU's; ``source`` says which view they are
    ("cpuid" or "kernel"). From the kernel's view a flag of :data:`KERNEL_MAY_HIDE`
    is not held against the CPU: the kernel hides those from CPUs that run them.
    """
    info = _load() if info is None else info
    needed = set(info.get("isa_features") or [])
    if flags is None:
        flags, source = _running_cpu()
    if not flags:  # unknown CPU: do not refuse on a guess
        return []
    missing = needed - flags
    if source == "kernel":
        missing -= set(KERNEL_MAY_HIDE)
    return sorted(missing)


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
