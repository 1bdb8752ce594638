"""Record this machine's CPU facts as test data for the ISA guard (tests/data/cpus/NAME.json).

    python tools/record_cpu_facts.py tests/data/cpus/intel-xeon-sapphire-rapids.json

Records the three views the build and the guard deal with: the kernel's
(/proc/cpuinfo flags), the CPU's own (CPUID + XCR0, through the installed
sarai_llama._cpuid) and the compiler's (-march=native with the AMX kernels off,
as a native build compiles). Run it on a machine of another vendor or kernel
and commit the file: tests/test_build_info.py checks the guard against every
recorded machine, so the suite knows CPUs it does not run on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cmake"))
from write_build_info import compiled_isa_features  # noqa: E402

NATIVE_FLAGS = "-march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"  # as CMakeLists.txt's SARAI_ISA_FLAGS


def cpuinfo_field(name: str) -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--compiler", default="gcc")
    args = ap.parse_args()
    from sarai_llama import _cpuid  # the guard's own probe

    facts = {
        "source": f"recorded by tools/record_cpu_facts.py on {dt.date.today().isoformat()}",
        "vendor": cpuinfo_field("vendor_id"),
        "model": cpuinfo_field("model name"),
        "kernel": platform.release(),
        "kernel_flags": sorted(cpuinfo_field("flags").split()),
        "cpuid_features": sorted(_cpuid.features() or []),
        "march_native_features": compiled_isa_features(args.compiler, NATIVE_FLAGS),
    }
    args.out.write_text(json.dumps(facts, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
