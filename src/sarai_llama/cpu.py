"""Facts about the CPUs this process may run on: cores, hybrid cores, affinity, cgroup quota.

Everything is read from the kernel (sysfs, /proc, cgroupfs) at call time, on
the machine where the model runs. Each reader takes a ``root`` so the same
code can be pointed at a recorded tree of another machine in tests.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import cgroup

__all__ = ["CpuTopology", "affinity", "cgroup_cpu_quota", "model_name", "topology", "usable_cpus"]


_read = cgroup.read


def parse_cpu_list(text: str) -> set[int]:
    """Parse a kernel CPU list such as ``0-3,8,10-11``."""
    cpus: set[int] = set()
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return cpus


def model_name() -> str:
    """The running CPU's model name as the kernel reports it ("" when unknown)."""
    text = _read(Path("/proc/cpuinfo")) or ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def affinity() -> set[int]:
    """CPUs this process may run on (``taskset``, cpusets, ``sched_setaffinity``)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


@dataclass
class CpuTopology:
    """Which logical CPUs share a core, and which cores are efficiency cores."""

    #: logical CPU -> (package, core) id of its physical core
    core_of: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: logical CPUs that are efficiency cores on a hybrid CPU (Intel's cpu_atom)
    efficiency: set[int] = field(default_factory=set)

    def physical_cores(self, cpus: set[int]) -> int:
        """Physical cores among ``cpus`` (SMT siblings count once)."""
        return len({self.core_of.get(c, (-1, c)) for c in cpus})

    def performance_cores(self, cpus: set[int]) -> int:
        """Physical performance cores among ``cpus``; all cores on a non-hybrid CPU."""
        p_cpus = {c for c in cpus if c not in self.efficiency}
        return self.physical_cores(p_cpus or cpus)


def topology(root: str | Path = "/") -> CpuTopology:
    """Read the core map and the hybrid core types from sysfs under ``root``."""
    base = Path(root) / "sys/devices/system/cpu"
    topo = CpuTopology()
    for entry in base.glob("cpu[0-9]*"):
        cpu = int(entry.name[3:])
        pkg = _read(entry / "topology/physical_package_id")
        core = _read(entry / "topology/core_id")
        if pkg is not None and core is not None:
            topo.core_of[cpu] = (int(pkg), int(core))
    # Intel hybrid CPUs expose their E-cores as the cpu_atom PMU.
    atom = _read(Path(root) / "sys/devices/cpu_atom/cpus")
    if atom:
        topo.efficiency = parse_cpu_list(atom)
    return topo


def cgroup_cpu_quota(root: str | Path = "/") -> float | None:
    """CPU quota of this process's cgroup and its parents, in CPUs (None when unlimited).

    cgroup v2 ``cpu.max`` ("max 100000" or "150000 100000") and cgroup v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` are both understood; the
    smallest limit on the path to the root applies.
    """
    limits: list[float] = []
    for d in cgroup.walk(Path(root), "cpu"):
        cpu_max = _read(d / "cpu.max")
        if cpu_max:
            quota, _, period = cpu_max.partition(" ")
            if quota != "max" and period:
                limits.append(int(quota) / int(period))
        q = _read(d / "cpu.cfs_quota_us")
        p = _read(d / "cpu.cfs_period_us")
        if q and p and int(q) > 0:
            limits.append(int(q) / int(p))
    return min(limits) if limits else None


def usable_cpus(root: str | Path = "/", cpus: set[int] | None = None) -> tuple[int, str]:
    """How many threads can run at full speed at once, and why: (count, reason).

    min(physical performance cores in the affinity mask, floor(cgroup quota)), at least 1.
    """
    cpus = affinity() if cpus is None else cpus
    topo = topology(root)
    cores = topo.performance_cores(cpus) if topo.core_of else len(cpus)
    reason = f"{cores} physical {'P-' if topo.efficiency else ''}cores in the affinity mask"
    quota = cgroup_cpu_quota(root)
    if quota is not None and math.floor(quota) < cores:
        cores = math.floor(quota)
        reason = f"cgroup CPU quota of {quota:g} CPUs"
    return max(1, cores), reason
