"""How much memory the state cache may take: the cgroup memory limit (v1, v2), the machine's RAM.

The state cache (``_core.StateCache``) holds KV states in host RAM. In a pod, going
past the memory limit gets the process killed, so its default budget is what the
limit leaves after the model, the KV cache and the compute buffers, less a
margin; on a machine without a limit, a fraction of its RAM. Everything is read
at call time; each reader takes a ``root`` so tests can point it at a recorded
tree of another machine (as :mod:`cpu` does for the CPU quota).
"""

from __future__ import annotations

from pathlib import Path

from . import cgroup

__all__ = ["MARGIN_BYTES", "MARGIN_SHARE", "MODELS_RAM_SHARE", "RAM_SHARE", "cgroup_memory_limit",
           "explain_cache_budget", "explain_models_budget", "resident_anon", "total_ram"]

#: cgroup v1 writes a huge page-aligned number (9223372036854771712) for "no limit"
_V1_UNLIMITED = 1 << 60
#: without a memory limit the cache takes at most this share of the machine's RAM
#: (other processes live there too) and never more than half of what is available now
RAM_SHARE = 0.25
#: kept free under a limit, whichever is larger: the compute buffers' first use (they are
#: allocated at load but touched by the first decodes), Python, HTTP buffers and growth
MARGIN_BYTES = 256 << 20
MARGIN_SHARE = 0.10


def cgroup_memory_limit(root: str | Path = "/") -> int | None:
    """This process's memory limit in bytes (None: unlimited): the smallest on the path to the root.

    cgroup v2 ``memory.max`` (and ``memory.high``, past which the kernel throttles
    the process hard) and cgroup v1 ``memory.limit_in_bytes`` are understood.
    """
    limits: list[int] = []
    for d in cgroup.walk(Path(root), "memory"):
        for name in ("memory.max", "memory.high", "memory.limit_in_bytes"):
            text = cgroup.read(d / name)
            if text and text != "max" and text.isdigit() and int(text) < _V1_UNLIMITED:
                limits.append(int(text))
    return min(limits) if limits else None


def _meminfo(root: Path, key: str) -> int | None:
    for line in (cgroup.read(root / "proc/meminfo") or "").splitlines():
        name, _, rest = line.partition(":")
        if name == key and rest.split():
            return int(rest.split()[0]) * 1024
    return None


def total_ram(root: str | Path = "/") -> int | None:
    """The machine's RAM in bytes (``MemTotal``), None when unknown."""
    return _meminfo(Path(root), "MemTotal")


def resident_anon(root: str | Path = "/") -> int:
    """This process's resident anonymous memory in bytes (``RssAnon``: heap, KV cache, buffers)."""
    for line in (cgroup.read(Path(root) / "proc/self/status") or "").splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def explain_cache_budget(model_bytes: int, kv_bytes: int, root: str | Path = "/") -> tuple[int, str]:
    """(bytes, reason): the state cache's default RAM budget for this process, now.

    ``model_bytes``: the model file (its mapped pages count against a cgroup's
    limit); ``kv_bytes``: the KV cache. Under a memory limit: the limit less the
    model, what this process holds already (RSS of the heap, which includes the
    KV cache once it is written; at least ``kv_bytes``) and a margin
    (:data:`MARGIN_BYTES` or :data:`MARGIN_SHARE` of the limit, whichever is
    larger). Without one: :data:`RAM_SHARE` of the RAM, at most half of what is
    available. Never below 0.
    """
    mib = 1 << 20
    limit = cgroup_memory_limit(root)
    held = max(resident_anon(root), kv_bytes)
    if limit is not None:
        margin = max(MARGIN_BYTES, int(limit * MARGIN_SHARE))
        budget = max(0, limit - model_bytes - held - margin)
        return budget, (f"cgroup memory limit {limit // mib} MiB - model {model_bytes // mib} MiB - "
                        f"KV cache and heap {held // mib} MiB - margin {margin // mib} MiB")
    ram = total_ram(root)
    if ram is None:
        return 0, "no memory limit and the RAM size is unknown: no state cache"
    available = _meminfo(Path(root), "MemAvailable") or ram
    budget = max(0, min(int(ram * RAM_SHARE), available // 2))
    return budget, (f"no memory limit: {RAM_SHARE:.0%} of {ram // mib} MiB RAM, at most half of the "
                    f"{available // mib} MiB available")


#: Without a memory limit, the loaded models may take this share of the machine's RAM together.
MODELS_RAM_SHARE = 0.75


def explain_models_budget(root: str | Path = "/") -> tuple[int, str]:
    """(bytes, reason): what the models a server loads may take together, now.

    Under a memory limit: the limit less a margin (:data:`MARGIN_BYTES` or
    :data:`MARGIN_SHARE` of it, whichever is larger) for Python, HTTP buffers
    and growth. Without one: :data:`MODELS_RAM_SHARE` of the RAM (other processes
    live there too). 0 when neither is known.
    """
    mib = 1 << 20
    limit = cgroup_memory_limit(root)
    if limit is not None:
        margin = max(MARGIN_BYTES, int(limit * MARGIN_SHARE))
        return max(0, limit - margin), f"cgroup memory limit {limit // mib} MiB - margin {margin // mib} MiB"
    ram = total_ram(root)
    if ram is None:
        return 0, "no memory limit and the RAM size is unknown"
    return int(ram * MODELS_RAM_SHARE), f"no memory limit: {MODELS_RAM_SHARE:.0%} of {ram // mib} MiB RAM"
