"""The ISA guard's policy (sarai_llama._build_info) on the recorded facts of several CPUs.

Each file in tests/data/cpus/ holds one machine's three views of its CPU: the
kernel's (/proc/cpuinfo), the CPU's (CPUID + XCR0) and the compiler's
(-march=native as a native build uses it). The suite runs on one machine at a
time; these records let it check the guard against every vendor we have met.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from sarai_llama import _build_info as bi

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cmake"))
import write_build_info  # noqa: E402  (the macro -> cpuinfo name table)

MAPPED = set(write_build_info.X86_MACRO_TO_CPUINFO.values())
MACHINES = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "tests" / "data" / "cpus").glob("*.json"))}


def test_both_vendors_are_recorded():
    assert {m["vendor"] for m in MACHINES.values()} >= {"GenuineIntel", "AuthenticAMD"}


@pytest.mark.parametrize("name", MACHINES)
def test_views_differ_only_where_the_kernel_hides_a_feature(name):
    m = MACHINES[name]
    cpuid, kernel = set(m["cpuid_features"]), set(m["kernel_flags"]) & MAPPED
    assert cpuid - kernel <= set(bi.KERNEL_MAY_HIDE), "CPUID reports more than the kernel, for no known reason"
    assert kernel - cpuid == set(), "the kernel lists a feature the CPU does not report"
    # -march=native follows CPUID (less AMX, which no build of ours compiles)
    assert set(m["march_native_features"]) == cpuid - {"amx_tile", "amx_int8", "amx_bf16"}


@pytest.mark.parametrize("name", MACHINES)
def test_a_native_build_runs_where_it_was_built(name):
    """Whichever view the guard gets, it never refuses the machine a build was made on."""
    m = MACHINES[name]
    build = {"build_type": "native", "isa_features": m["march_native_features"]}
    assert bi.missing_features(build, set(m["cpuid_features"]), "cpuid") == []
    # Without CPUID (the kernel's view only), a hidden RDSEED must not refuse a good build.
    assert bi.missing_features(build, set(m["kernel_flags"]), "kernel") == []


@pytest.mark.parametrize("built, runs", list(itertools.permutations(MACHINES, 2)))
def test_a_native_build_on_another_cpu(built, runs):
    """Refused exactly when the other CPU lacks something the build may execute, named."""
    build = {"build_type": "native", "isa_features": MACHINES[built]["march_native_features"]}
    target = MACHINES[runs]
    expected = sorted(set(build["isa_features"]) - set(target["cpuid_features"]))
    assert bi.missing_features(build, set(target["cpuid_features"]), "cpuid") == expected


def test_intel_avx512_fp16_build_is_refused_on_zen5():
    intel = next(m for m in MACHINES.values() if m["vendor"] == "GenuineIntel" and "avx512_fp16" in m["cpuid_features"])
    amd = next(m for m in MACHINES.values() if m["vendor"] == "AuthenticAMD")
    build = {"build_type": "native", "isa_features": intel["march_native_features"]}
    assert bi.missing_features(build, set(amd["cpuid_features"]), "cpuid") == ["avx512_fp16"]


def test_the_kernel_view_still_refuses_what_is_really_missing():
    build = {"build_type": "native", "isa_features": ["avx2", "avx512f", "rdseed", "sse2"]}
    assert bi.missing_features(build, {"sse2", "avx2"}, "kernel") == ["avx512f"]
    assert bi.missing_features(build, {"sse2", "avx2"}, "cpuid") == ["avx512f", "rdseed"]


def test_unknown_cpu_is_not_refused_on_a_guess():
    assert bi.missing_features({"build_type": "native", "isa_features": ["avx2"]}, set(), "kernel") == []
