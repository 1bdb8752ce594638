#!/usr/bin/env python3
"""Portable vs native, one run: ``python tools/bench_builds.py --portable-site DIR``.

Runs ``sarai-llama bench`` (pp512 and tg128 at 1 and 2 threads by default) for
the portable build with its automatic CPU variant, the portable build forced to
``haswell`` (what a ``-march=x86-64-v3`` wheel gets), and the build installed in
this environment (normally the native one), each in its own process, and prints
one table with the portable/native ratio. ``DIR`` is a ``pip install --target``
directory holding a portable build (``pip wheel .`` then ``pip install --target``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def bench(site: str | None, variant: str | None, args: argparse.Namespace) -> list[dict]:
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = site
    env.pop("SARAI_CPU_VARIANT", None)
    if variant:
        env["SARAI_CPU_VARIANT"] = variant
    cmd = [sys.executable, "-m", "sarai_llama", "bench", *([args.model] if args.model else []),
           "-p", str(args.n_prompt), "-n", str(args.n_gen), "-t", args.threads, "-r", str(args.reps), "-o", "json"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd="/").stdout
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--portable-site", required=True)
    ap.add_argument("--model")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--n-prompt", type=int, default=512)
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    runs = {
        "portable (auto)": bench(args.portable_site, None, args),
        "portable (haswell)": bench(args.portable_site, "haswell", args),
        "installed": bench(None, None, args),
    }
    native = {(r["n_prompt"], r["n_gen"], r["n_threads"]): r for r in runs["installed"]}
    print(f"model: {runs['installed'][0]['model_type']}  cpu: {runs['installed'][0]['cpu_info']}")
    print("| build | variant | threads | test | t/s | vs installed |")
    print("|---|---|---|---|---|---|")
    for name, rows in runs.items():
        for r in rows:
            ref = native[(r["n_prompt"], r["n_gen"], r["n_threads"])]
            test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
            label = name if name != "installed" else f"installed ({r['build_type']})"
            print(f"| {label} | {r['cpu_variant']} | {r['n_threads']} | {test} | {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} "
                  f"| {r['avg_ts'] / ref['avg_ts']:.3f} |")
    print("command: " + " ".join([sys.executable, *sys.argv]))


if __name__ == "__main__":
    main()
