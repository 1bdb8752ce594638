"""Write ``build_info.json``: what was built, where, how. Called by CMakeLists.txt at configure.

Runs with the build's Python, before the package exists, so it imports nothing
from ``sarai_llama``. The ISA features are read from the compiler itself
(``-dM -E`` with the exact ISA flags of the build), so the import-time guard
checks what the compiler was allowed to emit, not what we believe it emitted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import socket
import subprocess
import sys

# Compiler macro -> the flag name Linux prints in /proc/cpuinfo, for every ISA
# extension GCC or Clang may emit code for under -march on x86-64.
X86_MACRO_TO_CPUINFO = {
    "__SSE__": "sse", "__SSE2__": "sse2", "__SSE3__": "pni", "__SSSE3__": "ssse3",
    "__SSE4_1__": "sse4_1", "__SSE4_2__": "sse4_2", "__POPCNT__": "popcnt",
    "__AVX__": "avx", "__AVX2__": "avx2", "__FMA__": "fma", "__F16C__": "f16c",
    "__BMI__": "bmi1", "__BMI2__": "bmi2", "__LZCNT__": "abm", "__MOVBE__": "movbe",
    "__AES__": "aes", "__PCLMUL__": "pclmulqdq", "__SHA__": "sha_ni", "__ADX__": "adx",
    "__RDRND__": "rdrand", "__RDSEED__": "rdseed", "__GFNI__": "gfni", "__VAES__": "vaes",
    "__VPCLMULQDQ__": "vpclmulqdq", "__AVXVNNI__": "avx_vnni",
    "__AVX512F__": "avx512f", "__AVX512CD__": "avx512cd", "__AVX512DQ__": "avx512dq",
    "__AVX512BW__": "avx512bw", "__AVX512VL__": "avx512vl", "__AVX512IFMA__": "avx512ifma",
    "__AVX512VBMI__": "avx512vbmi", "__AVX512VBMI2__": "avx512_vbmi2",
    "__AVX512VNNI__": "avx512_vnni", "__AVX512BITALG__": "avx512_bitalg",
    "__AVX512VPOPCNTDQ__": "avx512_vpopcntdq", "__AVX512BF16__": "avx512_bf16",
    "__AVX512FP16__": "avx512_fp16", "__AMX_TILE__": "amx_tile", "__AMX_INT8__": "amx_int8",
    "__AMX_BF16__": "amx_bf16",
}


def compiled_isa_features(compiler: str, isa_flags: str) -> list[str]:
    """The cpuinfo names of the ISA extensions the compiler may use with ``isa_flags``."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    cmd = [compiler, *isa_flags.split(), "-dM", "-E", "-x", "c", os.devnull]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    macros = set(re.findall(r"^#define (__\w+__) 1$", out, flags=re.M))
    return sorted(name for macro, name in X86_MACRO_TO_CPUINFO.items() if macro in macros)


def cpu_facts() -> dict:
    try:
        import cpuinfo  # py-cpuinfo, a build requirement

        info = cpuinfo.get_cpu_info()
        return {"cpu_model": info.get("brand_raw", ""), "cpu_flags": sorted(info.get("flags", []))}
    except Exception as exc:  # the build must not fail on an exotic CPU
        return {"cpu_model": platform.processor(), "cpu_flags": [], "cpu_facts_error": repr(exc)}


def physical_cores() -> int:
    """Distinct (package, core) pairs the build may run on: the build machine's thread answer."""
    cores = set()
    for cpu in os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1):
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{base}/physical_package_id") as pkg, open(f"{base}/core_id") as core:
                cores.add((pkg.read().strip(), core.read().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--build-type", required=True, choices=["native", "portable"])
    ap.add_argument("--lto", required=True)
    ap.add_argument("--blas", required=True)
    ap.add_argument("--blas-source", default="")
    ap.add_argument("--blas-version", default="")
    ap.add_argument("--blas-threading", default="")
    ap.add_argument("--compiler", required=True)
    ap.add_argument("--compiler-id", required=True)
    ap.add_argument("--isa-flags", default="")
    ap.add_argument("--cpu-variants", default="")
    ap.add_argument("--cmake-flags-file", required=True)
    ap.add_argument("--vendor-record", required=True)
    ap.add_argument("--version-file", required=True)
    args = ap.parse_args()

    with open(args.vendor_record) as fh:
        record = json.load(fh)
    with open(args.version_file) as fh:
        version = re.search(r'__version__\s*=\s*"([^"]+)"', fh.read()).group(1)
    with open(args.cmake_flags_file) as fh:
        cmake_flags = [line for line in fh.read().splitlines() if line]

    native = args.build_type == "native"
    threads = physical_cores()
    info = {
        "build_type": args.build_type,
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "hostname": socket.gethostname(),
        **cpu_facts(),
        "isa_flags": args.isa_flags,
        # Portable builds: the baseline of everything outside the variant modules.
        "isa_features": compiled_isa_features(args.compiler, args.isa_flags),
        "cpu_variants": [v for v in args.cpu_variants.split(",") if v],
        "cmake_flags": cmake_flags,
        "llama_version": {
            "commit": record["commit"],
            "build_number": int(record["version"].lstrip("b")) if record["version"].lstrip("b").isdigit() else None,
            "release": record["version"],
            "source": record["source"],
        },
        "compiler": args.compiler_id,
        "reproducible": not native,
        "lto": args.lto.upper() in ("ON", "TRUE", "1", "YES"),
        "blas": None if args.blas == "none" else {
            "vendor": "OpenBLAS",
            "version": args.blas_version,
            "source": args.blas_source,
            "threading": args.blas_threading,
            "requested": args.blas,
        },
        # Why a native build without blas= has no OpenBLAS (the Makefile's BLAS ?= none).
        "blas_default": {
            "value": "none",
            "reason": "measured (issue 37, docs/architecture.md 'Measured at real sizes', quiet 2-core Zen 4, "
                      "rounds interleaved): 1.02x on 512-token prompts of a Llama-3.2-3B Q4_K_M and 1.01x at "
                      "SOLAR-10.7B, generation 1.02x and 0.95x: nothing for a 6x longer build; generation never "
                      "uses it (ggml "
                      "gives OpenBLAS only batches >= 32, as F32 copies of the quantized weights, which the int8 "
                      "kernels already beat)",
        },
        "optimal_threads": {
            "value": threads,
            "note": "the build machine's physical cores; the run-time answer (sarai_llama.optimal_threads) wins",
        },
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "sarai_llama": version,
        "machine": platform.machine(),
    }
    with open(args.out, "w") as fh:
        json.dump(info, fh, indent=2)
        fh.write("\n")


if __name__ == "__main__":
    main()
