"""Load generator for an OpenAI-compatible server: C concurrent streaming clients, distinct prompts.

    python tools/bench_serve.py http://127.0.0.1:8000 [-c 1,4,8] [-n 128] [-r 3] [-o md|json]
                                [--client raw|openai]

For each concurrency C, C clients each send ``-r`` streaming completions one
after another (every prompt distinct, so no request reuses another's prefix),
asking for exactly ``-n`` tokens (``ignore_eos``, a llama.cpp extension that
llama-server honours too). Reported per C: aggregate generated tokens/s
(all tokens / wall time), time to first token p50/p95, and the mean per-stream
tokens/s (a stream's tokens after its first / the time after its first).
Works against ``sarai-llama serve``, llama-server and other OpenAI-compatible servers.

The load generator shares the machine with the server it measures, so it is
kept lean: ``--client raw`` (the default) streams with httpx and reads the SSE
``data:`` lines itself, on uvloop when installed; ``--client openai`` uses the
official client (pydantic models for every chunk: on 2 cores that costs the
server about 1 s of CPU per 3,000 tokens). Use the same client for every server
compared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from serving_lib import main_async  # tools/ is this script's sys.path[0]


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| C | requests | gen tokens | aggregate tok/s | TTFT p50 (s) | TTFT p95 (s) | per-stream tok/s |"
    lines = [head, "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['tokens']} | {r['aggregate_tps']:.1f} | "
                     f"{r['ttft_p50_s']:.3f} | {r['ttft_p95_s']:.3f} | {r['per_stream_tps']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("-c", "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    p.add_argument("-n", "--n-gen", type=int, default=128, help="tokens per request")
    p.add_argument("-r", "--repetitions", type=int, default=3, help="requests per client")
    p.add_argument("-m", "--model", default=None, help="model id (default: the server's first)")
    p.add_argument("--api-key", default="none")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--no-warmup", dest="warmup", action="store_false")
    p.add_argument("-o", "--output", choices=["md", "json"], default="md")
    p.add_argument("--client", choices=["raw", "openai"], default="raw",
                   help="raw: httpx and SSE lines parsed here (lean); openai: the official client")
    args = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        rows = asyncio.run(main_async(args))
    else:
        rows = uvloop.run(main_async(args))
    print(json.dumps(rows, indent=2) if args.output == "json" else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
