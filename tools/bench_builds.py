#!/usr/bin/env python3
"""The design's table: builds side by side on one model, interleaved, against the roofline.

    python tools/bench_builds.py MODEL --build zero-compile=dist/sarai_llama-...whl \\
        --build native=installed --build native+openblas=build/issue37/sites/native-blas \\
        [--rounds 3 --n-prompt 512 --n-gen 16 --threads N --setup native=101 --plot out.png]
        [--env native-spin0=GOMP_SPINCOUNT=0]

(``make bench-llama-native MODEL=... BUILDS="zero-compile=WHEEL native=installed ..."``.)

Each ``--build NAME=WHERE`` is ``installed`` (this environment's sarai_llama), a
``pip install --target`` directory, or a wheel, which is installed into a temporary
directory first; that install is timed and is the build's setup time (native builds'
setup times come from ``--setup NAME=SECONDS``, measured where they were built).
``--env NAME=VAR=VALUE`` sets a variable for one build's rounds only, so one build can run
under two settings (two names for the same WHERE), e.g. GNU OpenMP's ``GOMP_SPINCOUNT``.

Every round runs each build once, in its own process, in a rotating order (so that no
build always runs first, after a given other, or on a warmer page cache): load the model
(``load_model`` + a context; the probe process is skipped, the files are ours), one
warm-up decode, one ``--n-prompt`` token prompt in batches of 512 (timed), then
``--n-gen`` single-token decodes (timed). The process's peak RSS is its
VmHWM (the mapped weights count once touched, as in ``top``). The read
bandwidth is measured between builds in each round. The table gives medians over the
rounds, the ratios against the build named ``native``, generation as a fraction of the
roofline (``sarai_llama.roofline``) and, labelled as the design's, the design's own
figures for SOLAR-10.7B Q4_K_M. ``--json-dir`` writes each build's rows in ``bench -o
json``'s format, so ``sarai-llama bench --compare A.json B.json`` compares any two.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The design's figures, SOLAR-10.7B Q4_K_M, zero-compile vs native + OpenBLAS (its own table).
DESIGN = {
    "generation tok/s": ("2.8-3.2", "4.0-4.5"),
    "512-token prompt s": ("15-20", "8-12"),
    "peak RSS GB": ("11.8", "10.2"),
}


def _vm_hwm() -> int:
    """This process's peak resident bytes (VmHWM: ru_maxrss would carry the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(model: str, n_prompt: int, n_gen: int, threads: int) -> None:
    """One round of one build (runs in the build's own interpreter): prints one JSON line."""
    import random

    start = time.perf_counter()
    import sarai_llama
    from sarai_llama import _core
    from sarai_llama.context_config import ContextConfig
    from sarai_llama.loading import load_model

    imported = time.perf_counter()
    model_obj = load_model(model, trusted=True)
    ctx = _core.Context(model_obj, ContextConfig(n_ctx=n_prompt + n_gen + 16, n_batch=512, n_threads=threads)
                        .to_core())
    loaded = time.perf_counter()
    rng = random.Random(0)
    tokens = [rng.randrange(model_obj.n_vocab) for _ in range(n_prompt + n_gen)]
    ctx.eval(tokens[:8], False)  # warm-up: first-touch faults of the mapped weights, thread start
    ctx.clear()
    t0 = time.perf_counter()
    ctx.eval(tokens[:n_prompt], False)
    pp_s = time.perf_counter() - t0
    ctx.clear()
    ctx.eval(tokens[:1], False)
    t0 = time.perf_counter()
    for tok in tokens[1:n_gen + 1]:
        ctx.eval([tok], False)
    tg_s = time.perf_counter() - t0
    info = sarai_llama.build_info()
    print(json.dumps({
        "import_s": imported - start, "load_s": loaded - imported, "pp_s": pp_s, "tg_ts": n_gen / tg_s,
        "peak_rss": _vm_hwm(),
        "build_type": info["build_type"], "blas": (info.get("blas") or {}).get("vendor"),
        "lto": info.get("lto"), "cpu_variant": sarai_llama.system_info()["cpu_variant"],
        "model_desc": model_obj.desc, "n_params": model_obj.n_params,
    }))


def _site(name: str, where: str, workdir: Path, setup: dict[str, float]) -> str | None:
    """The PYTHONPATH entry of a build (None: this environment); a wheel is installed first, timed."""
    if where == "installed":
        return None
    if where.endswith(".whl"):
        target = workdir / name
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), where],
                       check=True)
        setup.setdefault(name, time.perf_counter() - start)
        return str(target)
    if not (Path(where) / "sarai_llama").is_dir():
        raise SystemExit(f"--build {name}={where}: neither 'installed', a wheel, nor a directory with sarai_llama/")
    return where


def run_round(site: str | None, args: argparse.Namespace, extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SARAI_CPU_VARIANT")}
    env.update(extra)
    if site:
        env["PYTHONPATH"] = site
    cmd = [sys.executable, __file__, "--child", args.model, "--n-prompt", str(args.n_prompt), "--n-gen",
           str(args.n_gen), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/")
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt(values: list[float], digits: int = 2) -> str:
    med = statistics.median(values)
    spread = f" ({min(values):.{digits}f}-{max(values):.{digits}f})" if len(values) > 1 else ""
    return f"{med:.{digits}f}{spread}"


def table(builds: dict[str, list[dict]], setup: dict[str, float], bandwidth: list[float], bytes_per_token: int,
          args: argparse.Namespace) -> str:
    names = list(builds)
    med = {n: {k: statistics.median(r[k] for r in rows) for k in ("tg_ts", "pp_s", "peak_rss", "load_s")}
           for n, rows in builds.items()}
    bw = statistics.median(bandwidth)
    ref = "native" if "native" in builds else names[0]
    first = next(iter(builds.values()))[0]
    lines = [f"model: {first['model_desc']} ({Path(args.model).name}), {bytes_per_token / 1e9:.2f} GB of weights "
             f"read per token; {args.threads} threads; {args.rounds} interleaved rounds (median, min-max)",
             f"read bandwidth: {bw / 1e9:.1f} GB/s median of {len(bandwidth)} (min {min(bandwidth) / 1e9:.1f}, "
             f"max {max(bandwidth) / 1e9:.1f}) -> roofline {bw / bytes_per_token:.2f} tok/s",
             "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("build", [f"{r[0]['build_type']}/{r[0]['cpu_variant']}" + (f"+{r[0]['blas']}" if r[0]["blas"] else "")
                  for r in builds.values()])
    row(f"generation tok/s (tg{args.n_gen})", [_fmt([r["tg_ts"] for r in rows]) for rows in builds.values()])
    row(f"{args.n_prompt}-token prompt s", [_fmt([r["pp_s"] for r in rows]) for rows in builds.values()])
    row("peak RSS GB", [_fmt([r["peak_rss"] / 1e9 for r in rows]) for rows in builds.values()])
    row("load s", [_fmt([r["load_s"] for r in rows]) for rows in builds.values()])
    row("setup s", [f"{setup[n]:.0f}" if n in setup else "-" for n in names])
    row(f"generation / {ref}", [f"{med[n]['tg_ts'] / med[ref]['tg_ts']:.3f}" for n in names])
    row(f"prompt speed / {ref}", [f"{med[ref]['pp_s'] / med[n]['pp_s']:.3f}" for n in names])
    row("generation / roofline", [f"{med[n]['tg_ts'] * bytes_per_token / bw:.0%}" for n in names])
    row("prompt GFLOP/s (2 per parameter)",
        [f"{2 * first['n_params'] * args.n_prompt / med[n]['pp_s'] / 1e9:.0f}" for n in names])
    lines += ["", "The design's own figures (SOLAR-10.7B Q4_K_M on the design's machine, not measured here):",
              "| | design: zero-compile | design: native + OpenBLAS |", "|---|---|---|"]
    for label, (a, b) in DESIGN.items():
        lines.append(f"| {label} | {a} | {b} |")
    lines.append("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    return "\n".join(lines)


def plot(builds: dict[str, list[dict]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("tg_ts", "generation tok/s", 1), ("pp_s", "prompt s", 1), ("peak_rss", "peak RSS GB", 1e-9)]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    for ax, (key, label, scale) in zip(axes, keys):
        names = list(builds)
        values = [[r[key] * scale for r in builds[n]] for n in names]
        ax.bar(names, [statistics.median(v) for v in values], color="#4c78a8")
        for i, v in enumerate(values):
            ax.plot([i] * len(v), v, "k.", ms=4)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelsize=8, rotation=15)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench_json(name: str, rows: list[dict], args: argparse.Namespace) -> list[dict]:
    """The build's rounds as ``bench -o json`` rows (one pp and one tg row), for ``bench --compare``."""
    out = []
    for n_prompt, n_gen, ts in ((args.n_prompt, 0, [args.n_prompt / r["pp_s"] for r in rows]),
                                (0, args.n_gen, [r["tg_ts"] for r in rows])):
        r0 = rows[0]
        out.append({"model_filename": args.model, "model_type": r0["model_desc"], "n_threads": args.threads,
                    "n_batch": 512, "n_ubatch": 512, "type_k": "f16", "n_prompt": n_prompt, "n_gen": n_gen,
                    "avg_ts": statistics.mean(ts), "stddev_ts": statistics.stdev(ts) if len(ts) > 1 else 0.0,
                    "samples_ts": ts, "build_type": r0["build_type"], "cpu_variant": r0["cpu_variant"],
                    "cpu_info": args.cpu_info, "build_name": name,
                    "extra": {"build_info": {"blas": {"vendor": r0["blas"]} if r0["blas"] else None}}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--build", action="append", default=[], metavar="NAME=WHERE",
                    help="installed, a pip --target directory or a wheel (repeatable)")
    ap.add_argument("--setup", action="append", default=[], metavar="NAME=SECONDS",
                    help="a build's measured setup time (a wheel's install is timed here)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VAR=VALUE",
                    help="an environment variable for one build's rounds (repeatable)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n-prompt", type=int, default=512)
    ap.add_argument("--n-gen", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="default: sarai_llama's choice")
    ap.add_argument("--plot", metavar="OUT.png")
    ap.add_argument("--json-dir", help="write NAME.json per build (bench -o json rows) here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.model, args.n_prompt, args.n_gen, args.threads)
        return
    os.environ["SARAI_TRUSTED_MODELS"] = "1"
    from sarai_llama import cpu, roofline, threads
    args.model = str(Path(args.model).resolve())  # the rounds run in / (no checkout on their path)
    args.threads = args.threads or threads.choose_threads(None).n_threads
    args.cpu_info = cpu.model_name()
    setup = {k: float(v) for k, v in (s.split("=", 1) for s in args.setup)}
    specs = [b.split("=", 1) for b in args.build] or [["native", "installed"]]
    envs: dict[str, dict[str, str]] = {}
    for e in args.env:
        name, var, value = e.split("=", 2)
        envs.setdefault(name, {})[var] = value
    with tempfile.TemporaryDirectory(prefix="bench-builds-") as tmp:
        sites = {name: _site(name, where, Path(tmp), setup) for name, where in specs}
        results: dict[str, list[dict]] = {name: [] for name in sites}
        bandwidth: list[float] = []
        names = list(sites)
        for i in range(args.rounds):
            for name in names[i % len(names):] + names[:i % len(names)]:
                results[name].append(run_round(sites[name], args, envs.get(name, {})))
                bandwidth.append(roofline.measure_bandwidth(args.threads).bytes_per_s)
                print(f"round {i + 1}/{args.rounds} {name}: tg {results[name][-1]['tg_ts']:.2f} tok/s, "
                      f"pp {results[name][-1]['pp_s']:.2f} s", file=sys.stderr, flush=True)
    print(table(results, setup, bandwidth, roofline.weight_bytes_per_token(args.model), args))
    if args.json_dir:
        Path(args.json_dir).mkdir(parents=True, exist_ok=True)
        for name, rows in results.items():
            Path(args.json_dir, f"{name}.json").write_text(json.dumps(bench_json(name, rows, args), indent=2))
    if args.plot:
        plot(results, args.plot, f"{Path(args.model).name}, {args.threads} threads, {args.rounds} rounds, "
                                 f"{args.cpu_info}")
        print(f"plot written to {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
