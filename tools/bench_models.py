#!/usr/bin/env python3
"""Many models behind one server: the cold first token, and two busy models against one.

    python tools/bench_models.py [--model M] [--threads 2] [--parallel 4] [--ctx-size 2048] [--rounds 3]
        [-c 4] [-n 64] [--llama-server PATH]

Both servers serve a directory holding two names for the model (``m1``, ``m2``:
symbolic links to one file, so the page cache is alike for both) by name:
``sarai-llama serve --models-dir`` and, with ``--llama-server``, llama-server's
router mode (``--models-dir``, no ``-m``; it runs each model in a child process).
For each round, each server (in alternating order) is started and measured:

- **cold**: the time to the first streamed token of a request for ``m1``, not yet
  loaded (load + prefill), then the same request once loaded (**warm**);
- **one busy**: ``-c`` streams of ``-n`` tokens on ``m1``, aggregate tok/s;
- **two busy**: the same streams, half on ``m1`` and half on ``m2`` (both loaded);
- **stall**: two streams on ``m1`` while ``m2`` (unloaded first, ``POST /models/unload``)
  loads: the longest gap between two of their tokens, against the longest gap of the
  same streams without a load beside them.

The table gives the medians over rounds and the ratio two/one: near 1 means two
models share the cores without oversubscribing them (each engine uses every
thread; sarai-llama's engines step in turn). Build llama-server as
``tools/compare_servers.py`` says. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from serving_lib import RawClient, free_port, interleaved, parse_server_arguments, run_against, server_arguments


def commands(args: Any, folder: Path, port: int) -> dict[str, list[str]]:
    t, np_, c = str(args.threads), str(args.parallel), str(args.ctx_size)
    out = {"sarai-llama serve": [sys.executable, "-m", "sarai_llama", "serve", "--models-dir", str(folder),
                                 "--port", str(port), "--threads", t, "--parallel", np_, "--ctx-size", c]}
    if args.llama_server:
        out["llama-server router"] = [args.llama_server, "--models-dir", str(folder), "--port", str(port), "-t", t,
                                      "-np", np_, "-c", c, "-kvu", "--models-max", "2"]
    return out


async def model_ids(client: RawClient) -> dict[str, str]:
    """Our names ``m1``/``m2`` -> the ids the server lists them under (llama-server may add the extension)."""
    r = await client.http.get("/v1/models")
    r.raise_for_status()
    ids = [str(m["id"]) for m in r.json()["data"]]
    return {name: next(i for i in ids if Path(i).stem == name or i == name) for name in ("m1", "m2")}


async def streams(client: RawClient, models: list[str], n: int, tag: str) -> float:
    """One stream per entry of ``models``, all at once: the aggregate tok/s."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    samples = await asyncio.gather(*(client.one(m, f"{tag}{i} Write a long story about traveller {i} who", n)
                                     for i, m in enumerate(models)))
    return sum(s.tokens for s in samples) / (loop.time() - t0)


async def longest_gap(client: RawClient, model: str, beside: str | None, n: int, tag: str) -> float:
    """The longest time between two tokens of two streams on ``model`` (after their first), while
    ``beside`` (if given) is requested once they run: its load happens meanwhile."""
    seen: dict[int, list[float]] = {0: [], 1: []}

    async def later() -> None:
        while min(len(v) for v in seen.values()) < 4:
            await asyncio.sleep(0.01)
        if beside is not None:
            await client.one(beside, "load me", 2)

    await asyncio.gather(*(client.one(model, f"{tag}{i} Tell a long story about a lighthouse keeper", n,
                                      on_text=seen[i].append) for i in seen), later())
    return max(b - a for times in seen.values() for a, b in zip(times[1:], times[2:]))


def measure(url: str, args: Any, rnd: int) -> dict[str, float]:
    async def run() -> dict[str, float]:
        client = RawClient(url, "none", 600)
        try:
            ids = await model_ids(client)
            cold = await client.one(ids["m1"], f"r{rnd} The first question of the day is", 8)
            warm = await client.one(ids["m1"], f"r{rnd} The second question of the day is", 8)
            await client.one(ids["m2"], "warm up the second model", 4)
            c = max(2, args.concurrency)
            one = await streams(client, [ids["m1"]] * c, args.n_gen, f"r{rnd}one")
            two = await streams(client, [ids["m1"], ids["m2"]] * (c // 2), args.n_gen, f"r{rnd}two")
            quiet = await longest_gap(client, ids["m1"], None, args.n_gen, f"r{rnd}quiet")
            (await client.http.post("/models/unload", json={"model": ids["m2"]})).raise_for_status()
            loading = await longest_gap(client, ids["m1"], ids["m2"], args.n_gen, f"r{rnd}load")
            return {"cold_ttft_s": cold.ttft, "warm_ttft_s": warm.ttft, "one_busy_tps": one, "two_busy_tps": two,
                    "gap_quiet_s": quiet, "gap_loading_s": loading}
        finally:
            await client.close()

    return asyncio.run(run())


def main() -> None:
    ap = server_arguments(__doc__.splitlines()[1], parallel=4, ctx_size=2048, rounds=3)
    ap.add_argument("-c", "--concurrency", type=int, default=4, help="streams in the busy phases (even)")
    ap.add_argument("-n", "--n-gen", type=int, default=64, help="tokens per stream")
    args = parse_server_arguments(ap)
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        folder = Path(tmp)
        for name in ("m1", "m2"):
            (folder / f"{name}.gguf").symlink_to(Path(args.model).resolve())
        servers = commands(args, folder, 0)
        for rnd, name in interleaved(servers, args.rounds):
            port = free_port()
            cmd = commands(args, folder, port)[name]
            got = run_against(name, cmd, port, f"/tmp/bench-models-{port}.log",
                              lambda url, rnd=rnd: measure(url, args, rnd))
            rows.setdefault(name, []).append(got)
            print(f"round {rnd} {name}: {json.dumps({k: round(v, 3) for k, v in got.items()})}", file=sys.stderr)
    table = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in rows.items()}
    if args.output == "json":
        print(json.dumps(table, indent=1))
        return
    print(f"model {Path(args.model).name}, {args.threads} threads, {args.concurrency} streams of {args.n_gen} "
          f"tokens, median of {args.rounds} rounds\n")
    print("| server | cold first token (load + prefill) | warm first token | one model busy | two busy | two/one "
          "| longest token gap: alone | while another loads |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in table.items():
        print(f"| {name} | {m['cold_ttft_s']:.3f} s | {m['warm_ttft_s']:.3f} s | {m['one_busy_tps']:.1f} tok/s | "
              f"{m['two_busy_tps']:.1f} tok/s | {m['two_busy_tps'] / m['one_busy_tps']:.2f}x | "
              f"{m['gap_quiet_s'] * 1000:.0f} ms | {m['gap_loading_s'] * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
