"""Embeddings throughput, the issue-24 table: texts/s at C=1/4/8 clients, ours next to llama-server.

    python tools/bench_embeddings.py [--model M.gguf] [--llama-server PATH] [--threads 2]
        [--parallel 8] [--requests 16] [--rounds 3] [--concurrency 1,4,8] [-o md|json]

Each client sends ``/v1/embeddings`` requests of one text each (sentences of ~20-60
tokens), one after another, ``--requests`` in all per level, split over the clients.
Servers: ``sarai-llama serve`` (its pooled context decodes the texts of concurrent
requests together) and, with ``--llama-server`` (built from vendor/llama.cpp with our
flags, see tools/compare_servers.py), ``llama-server --embeddings --pooling mean`` with
as many slots as ``--parallel``. Rounds alternate the server order, so load from
elsewhere hits both alike; the table gives the median texts/s and latency p50 over rounds.

Model: Gemma 3 270M Q4_K_M by default. llama.cpp computes every read token's logits even
for embeddings, so Gemma's 262k-token vocabulary makes each text cost far more than a
dedicated embedding model's would; both servers pay that alike. Numbers are for
reading, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

from serving_lib import free_port, interleaved, parse_server_arguments, percentile, run_against, server_arguments  # tools/ is this script's sys.path[0]

SUBJECTS = ["the giant panda", "a steam engine", "the French revolution", "photosynthesis", "a jazz quartet",
            "the Pacific Ocean", "quantum computers", "a medieval castle", "honey bees", "the stock market",
            "volcanoes", "a chess opening", "the human heart", "solar panels", "ancient Rome", "coral reefs"]


def text(i: int) -> str:
    s = SUBJECTS[i % len(SUBJECTS)]
    return (f"Document {i}: a short note about {s}. " + f"It explains what {s} is, where it comes from, "
            "and why people care about it. " * (1 + i % 3)).strip()


def commands(args: argparse.Namespace, port: int) -> dict[str, list[str]]:
    m, t, np_, c = args.model, str(args.threads), str(args.parallel), str(args.ctx_size)
    out = {"ours": [sys.executable, "-m", "sarai_llama", "serve", m, "--port", str(port), "--threads", t,
                    "--parallel", np_, "--ctx-size", c]}
    if args.llama_server:
        out["llama-server"] = [args.llama_server, "-m", m, "--port", str(port), "-t", t, "-np", np_, "-c", c,
                               "--embeddings", "--pooling", "mean"]
    return out


async def embed(http: Any, model: str, i: int) -> float:
    t0 = time.perf_counter()
    r = await http.post("/v1/embeddings", json={"model": model, "input": text(i), "encoding_format": "float"})
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        raise SystemExit(f"HTTP {r.status_code}: {r.text[:300]}")
    if len(r.json()["data"][0]["embedding"]) < 8:
        raise SystemExit("no embedding in the reply")
    return dt


async def levels(url: str, args: argparse.Namespace) -> dict[int, dict[str, float]]:
    import httpx

    out: dict[int, dict[str, float]] = {}
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        model = (await http.get("/v1/models")).json()["data"][0]["id"]
        await embed(http, model, 0)  # warm-up: the pooled context is made on first use

        for c in args.concurrency:
            latencies: list[float] = []

            async def client(k: int, c: int = c) -> None:
                for i in range(k, args.requests, c):
                    latencies.append(await embed(http, model, i))

            t0 = time.perf_counter()
            await asyncio.gather(*(client(k) for k in range(c)))
            wall = time.perf_counter() - t0
            out[c] = {"texts_per_s": args.requests / wall, "p50_s": percentile(latencies, 0.5)}
    return out


def main() -> int:
    ap = server_arguments(__doc__.splitlines()[0], parallel=8, ctx_size=4096, rounds=3)
    ap.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    args = parse_server_arguments(ap)
    port = free_port()
    servers = commands(args, port)
    results: dict[str, dict[int, dict[str, list[float]]]] = {name: {} for name in servers}
    for rnd, name in interleaved(servers, args.rounds):
        got = run_against(name, servers[name], port, f"/tmp/bench-embeddings-{port}.log",
                          lambda url: asyncio.run(levels(url, args)))
        print(f"round {rnd + 1} {name}: " + ", ".join(f"C={c} {g['texts_per_s']:.2f}/s" for c, g in got.items()),
              file=sys.stderr, flush=True)
        for c, g in got.items():
            agg = results[name].setdefault(c, {"texts_per_s": [], "p50_s": []})
            agg["texts_per_s"].append(g["texts_per_s"])
            agg["p50_s"].append(g["p50_s"])
    if args.output == "json":
        print(json.dumps(results, indent=1))
        return 0
    med = {n: {c: {k: statistics.median(v) for k, v in g.items()} for c, g in r.items()} for n, r in results.items()}
    print(f"model {args.model}, {args.threads} threads, --parallel {args.parallel}, {args.requests} one-text "
          f"requests per level, median of {args.rounds} rounds")
    print("| server | " + " | ".join(f"C={c} texts/s (p50 s)" for c in args.concurrency) + " |")
    print("|---|" + "---:|" * len(args.concurrency))
    for name, r in med.items():
        cells = []
        for c in args.concurrency:
            ratio = f", {r[c]['texts_per_s'] / med['ours'][c]['texts_per_s']:.2f}x" if name != "ours" else ""
            cells.append(f"{r[c]['texts_per_s']:.2f} ({r[c]['p50_s']:.2f}{ratio})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("texts/s over the level's wall time; (latency p50 in s, ratio to ours)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
