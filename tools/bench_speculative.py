#!/usr/bin/env python3
"""Speculative decoding, the issue-23 table: tok/s per stream, ours next to llama-server's n-gram modes.

    python tools/bench_speculative.py [--model GGUF] [--llama-server PATH] [--lcp-python PY]
        [--threads 2] [--parallel 8] [-n 96] [--reps 2] [--rounds 3] [--servers NAME,...] [-o md|json]

Servers (each started on 127.0.0.1 with the same model, threads, context and
sequences, then stopped): ``sarai-llama serve --spec-type none`` (ours plain) and
with its default n-gram speculation (ours ngram); with ``--llama-server`` (built from
vendor/llama.cpp with our flags, see tools/compare_servers.py) llama-server with
``--spec-type none``, ``ngram-simple``, ``ngram-map-k`` and ``ngram-mod`` at their
defaults; with ``--lcp-python`` (a Python with ``llama-cpp-python[server]``) its server
plain and with ``--draft_model prompt-lookup-decoding`` (llama-cpp-python's
``LlamaPromptLookupDecoding``, 10 tokens).

Workloads, completions through HTTP (a warm-up first, so the prompt is cached and
every server mostly decodes):

* repetitive, C=1: rewrite a given paragraph with one name changed, greedy;
* free-form, C=1: a story, temperature 0.8 (seed per repetition);
* free-form, C=8: eight such stories at once, their tokens over the wall time (aggregate).

tok/s per stream = completion tokens / the request's wall time (C=8: the aggregate).
``--rounds`` repeats the whole cycle, every other round in reverse server order, so
load from elsewhere hits every server alike; the table gives the median over rounds
and repetitions, with each server's accepted/drafted draft tokens (ours from
``/metrics``, llama-server from its ``timings``) and each ratio to ours plain.
Numbers are for reading, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

from serving_lib import free_port, interleaved, parse_server_arguments, run_against, server_arguments  # tools/ is this script's sys.path[0]

PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling in long strips. "
    "Every night for ninety years it had turned its lamp toward the sea, warning ships away from "
    "the rocks below. The keeper, a quiet man named Elias, climbed the spiral stairs at dusk and "
    "wound the clockwork by hand, counting each of the one hundred and twelve steps aloud."
)
REPETITIVE = ("Rewrite the paragraph below, replacing the name Elias with Tomas and changing nothing "
              f"else.\n\nParagraph: {PARAGRAPH}\n\nRewritten paragraph:")
STORIES = ["a robot who learns to paint", "a lighthouse keeper's last night", "a city where it never stops raining",
           "two rival bakers", "a cat that guards a library", "the first farmer on Mars", "a lost umbrella",
           "a clockmaker's apprentice"]
WORKLOADS = ("repetitive C=1", "free-form C=1", "free-form C=8")


def story(i: int) -> str:
    return f"Write a short story about {STORIES[i % len(STORIES)]}.\n\nStory:"


def commands(args: argparse.Namespace, port: int) -> dict[str, list[str]]:
    m, t, np_, c = args.model, str(args.threads), str(args.parallel), str(args.ctx_size)
    ours = [sys.executable, "-m", "sarai_llama", "serve", m, "--port", str(port), "--threads", t, "--parallel", np_,
            "--ctx-size", c]
    out = {"ours plain": [*ours, "--spec-type", "none"], "ours ngram": [*ours, "--spec-type", "ngram-simple"]}
    if args.llama_server:
        base = [args.llama_server, "-m", m, "--port", str(port), "-t", t, "-np", np_, "-c", c, "-kvu"]
        for kind in ("none", "ngram-simple", "ngram-map-k", "ngram-mod"):
            out[f"llama-server {kind}"] = [*base, "--spec-type", kind]
    if args.lcp_python:
        base = [args.lcp_python, "-m", "llama_cpp.server", "--model", m, "--port", str(port), "--n_threads", t,
                "--n_ctx", c]
        out["llama-cpp-python plain"] = base
        out["llama-cpp-python lookup"] = [*base, "--draft_model", "prompt-lookup-decoding"]
    if args.servers:
        keep = [s.strip() for s in args.servers.split(",")]
        out = {k: v for k, v in out.items() if k in keep}
    return out


async def complete(http: Any, prompt: str, n: int, **kw: Any) -> tuple[int, float, tuple[int, int] | None]:
    """One non-streamed completion: (completion tokens, wall seconds, llama-server's (accepted, drafted))."""
    body = {"prompt": prompt, "max_tokens": n, **kw}
    t0 = time.perf_counter()
    r = await http.post("/v1/completions", json=body)
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        raise SystemExit(f"HTTP {r.status_code}: {r.text[:300]}")
    obj = r.json()
    timings = obj.get("timings") or {}
    drafts = (int(timings["draft_n_accepted"]), int(timings["draft_n"])) if "draft_n" in timings else None
    return int(obj["usage"]["completion_tokens"]), dt, drafts


async def our_drafts(http: Any) -> tuple[int, int] | None:
    r = await http.get("/metrics")
    if r.status_code != 200:
        return None
    got = {}
    for line in r.text.splitlines():
        for name in ("sarai:draft_tokens_total", "sarai:draft_tokens_accepted_total"):
            if line.startswith(name + " "):
                got[name] = int(float(line.split()[1]))
    if len(got) < 2:
        return None
    return got["sarai:draft_tokens_accepted_total"], got["sarai:draft_tokens_total"]


async def workloads(url: str, n: int, reps: int, seed: int) -> dict[str, dict[str, Any]]:
    import httpx

    out: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        greedy = {"temperature": 0}

        def free(i: int) -> dict[str, Any]:
            return {"temperature": 0.8, "top_p": 0.95, "seed": seed * 100 + i}

        await complete(http, REPETITIVE, 4, **greedy)  # warm-up: prompts cached, threads spun up
        for w in WORKLOADS:
            rates: list[float] = []
            acc = [0, 0]
            before = await our_drafts(http)
            for rep in range(reps):
                if w == "repetitive C=1":
                    got = [await complete(http, REPETITIVE, n, **greedy)]
                    rates.append(got[0][0] / got[0][1])
                elif w == "free-form C=1":
                    got = [await complete(http, story(rep), n, **free(rep))]
                    rates.append(got[0][0] / got[0][1])
                else:
                    t0 = time.perf_counter()
                    got = await asyncio.gather(*(complete(http, story(i), n, **free(rep * 8 + i)) for i in range(8)))
                    rates.append(sum(g[0] for g in got) / (time.perf_counter() - t0))
                for _, _, d in got:
                    if d:
                        acc[0] += d[0]
                        acc[1] += d[1]
            after = await our_drafts(http)
            if before and after:
                acc = [after[0] - before[0], after[1] - before[1]]
            out[w] = {"rates": rates, "accepted": acc[0], "drafted": acc[1]}
    return out


def measure(name: str, cmd: list[str], port: int, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return run_against(name, cmd, port, f"/tmp/bench-speculative-{port}.log",
                       lambda url: asyncio.run(workloads(url, args.n_gen, args.reps, seed)))


def main() -> int:
    ap = server_arguments(__doc__.splitlines()[0], parallel=8, ctx_size=4096, rounds=3)
    ap.add_argument("-n", "--n-gen", type=int, default=96)
    ap.add_argument("--reps", type=int, default=2, help="repetitions of each workload per round")
    ap.add_argument("--lcp-python")
    ap.add_argument("--servers", help="only these (comma-separated names from the table)")
    args = parse_server_arguments(ap)
    port = free_port()
    servers = commands(args, port)
    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in servers}
    for rnd, name in interleaved(servers, args.rounds):
        got = measure(name, servers[name], port, args, seed=rnd)
        print(f"round {rnd + 1} {name}: " + ", ".join(f"{w} {statistics.median(r['rates']):.1f}"
                                                      for w, r in got.items()), file=sys.stderr, flush=True)
        for w, r in got.items():
            agg = results[name].setdefault(w, {"rates": [], "accepted": 0, "drafted": 0})
            agg["rates"] += r["rates"]
            agg["accepted"] += r["accepted"]
            agg["drafted"] += r["drafted"]
    if args.output == "json":
        print(json.dumps(results, indent=1))
        return 0
    med = {name: {w: statistics.median(r["rates"]) for w, r in res.items()} for name, res in results.items()}
    base = med.get("ours plain", {})
    print(f"model {args.model}, {args.threads} threads, --parallel {args.parallel}, {args.n_gen} tokens, "
          f"median of {args.rounds} rounds x {args.reps}")
    print("| server | " + " | ".join(WORKLOADS) + " |")
    print("|---|" + "---:|" * len(WORKLOADS))
    for name, res in results.items():
        cells = []
        for w in WORKLOADS:
            r = res[w]
            ratio = f" ({med[name][w] / base[w]:.2f}x)" if base.get(w) else ""
            drafts = f", {r['accepted']}/{r['drafted']}" if r["drafted"] else ""
            cells.append(f"{med[name][w]:.1f}{ratio}{drafts}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("tok/s per stream (C=8: aggregate); (ratio to ours plain); accepted/drafted draft tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
