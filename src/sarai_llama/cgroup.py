"""Where this process's cgroup lives: the directories whose limits apply to it (v1 and v2).

Both the CPU quota (:mod:`cpu`) and the memory limit (:mod:`memory`) are the
smallest limit on the path from this process's cgroup up to its hierarchy's
mount point. Every function takes a ``root`` so tests can point it at a
recorded tree of another machine.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["dirs", "mounts", "read", "walk"]


def read(path: Path) -> str | None:
    """A kernel file's stripped text, None when it cannot be read."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def mounts(root: Path, controller: str) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(v2 mounts, v1 mounts of ``controller``) as (mount point, hierarchy root) from mountinfo.

    Falls back to the conventional /sys/fs/cgroup layout when mountinfo is absent
    (recorded test trees).
    """
    v2: list[tuple[Path, str]] = []
    v1: list[tuple[Path, str]] = []
    text = read(root / "proc/self/mountinfo")
    if text:
        for line in text.splitlines():
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            mount = root / fields[4].lstrip("/")
            if rfields[0] == "cgroup2":
                v2.append((mount, fields[3]))
            elif rfields[0] == "cgroup" and controller in rfields[2].split(","):
                v1.append((mount, fields[3]))
        return v2, v1
    base = root / "sys/fs/cgroup"
    v2 = [(base, "/"), (base / "unified", "/")]
    names = {"cpu": ("cpu,cpuacct", "cpu", "cpuacct,cpu")}.get(controller, (controller,))
    v1 = [(base / name, "/") for name in names]
    return v2, v1


def dirs(root: Path, controller: str) -> list[tuple[Path, Path]]:
    """(this process's cgroup directory, its mount point) for v2 and the v1 ``controller``."""
    v2_mounts, v1_mounts = mounts(root, controller)
    out: list[tuple[Path, Path]] = []
    text = read(root / "proc/self/cgroup") or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            candidates = v2_mounts
        elif controller in controllers.split(","):
            candidates = v1_mounts
        else:
            continue
        for mount, mount_root in candidates:
            rel = path
            if mount_root != "/" and (rel == mount_root or rel.startswith(mount_root.rstrip("/") + "/")):
                rel = rel[len(mount_root):]
            d = mount / rel.lstrip("/")
            if d.is_dir():
                out.append((d, mount))
    return out


def walk(root: Path, controller: str) -> list[Path]:
    """Every directory from this process's cgroup(s) up to the mount point, innermost first."""
    out: list[Path] = []
    for start, top in dirs(root, controller):
        d = start
        while True:
            out.append(d)
            if d == top or top not in d.parents:
                break
            d = d.parent
    return out
