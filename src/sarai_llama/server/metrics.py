"""Prometheus metrics: llama-server's ``llamacpp:*`` names where they exist, plus what nobody exports.

Dashboards and autoscalers written for llama-server read ``llamacpp:requests_processing``,
``llamacpp:requests_deferred``, ``llamacpp:prompt_tokens_total`` and
``llamacpp:tokens_predicted_total``; those keep their names and meaning. Added:
the admission queue, time to first token and inter-token latency histograms,
rejected requests by reason, and KV-cache use.

Gauges that mirror the engine are read at scrape time (a custom collector), so
the scheduler thread never pays for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

# Latency buckets (seconds): CPU inference spans milliseconds (a token) to minutes (a long prefill).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
ITL_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class _EngineCollector(Collector):
    def __init__(self, load: Callable[[], dict[str, Any] | None], stats: Callable[[], dict[str, Any] | None]):
        self._load = load
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        load = self._load() or {}
        stats = self._stats() or {}
        yield GaugeMetricFamily("llamacpp:requests_processing", "Requests decoding now (sequences in use).",
                                value=load.get("active", 0))
        yield GaugeMetricFamily("llamacpp:requests_deferred", "Requests admitted and waiting for a sequence.",
                                value=load.get("waiting", 0))
        yield GaugeMetricFamily("sarai:queue_length", "Requests waiting in the admission queue.",
                                value=load.get("waiting", 0))
        yield GaugeMetricFamily("sarai:queue_capacity", "Most requests that may wait (--max-queue).",
                                value=load.get("max_queue", 0))
        yield GaugeMetricFamily("sarai:sequences", "Sequences decoded together (--parallel).",
                                value=load.get("n_seq", 0))
        kv_size = load.get("kv_size", 0) or 0
        kv_used = load.get("kv_used", 0) or 0
        yield GaugeMetricFamily("llamacpp:kv_cache_tokens", "KV-cache cells in use (an upper bound with shared "
                                "prefixes).", value=kv_used)
        yield GaugeMetricFamily("llamacpp:kv_cache_usage_ratio", "KV-cache use (0..1).",
                                value=min(1.0, kv_used / kv_size) if kv_size else 0.0)
        yield CounterMetricFamily("llamacpp:n_decode", "llama_decode calls.", value=stats.get("n_decode_calls", 0))
        yield CounterMetricFamily("sarai:batch_tokens", "Tokens submitted to llama_decode.",
                                  value=stats.get("n_batch_tokens", 0))
        yield CounterMetricFamily("sarai:decode_seconds", "Time inside llama_decode.",
                                  value=stats.get("t_decode_ms", 0.0) / 1000.0)
        yield CounterMetricFamily("sarai:draft_tokens", "Speculative draft tokens verified.",
                                  value=stats.get("n_drafted", 0))
        yield CounterMetricFamily("sarai:draft_tokens_accepted", "Speculative draft tokens accepted.",
                                  value=stats.get("n_draft_accepted", 0))
        if "state_cache_hits" in stats:
            yield from _state_cache_metrics(stats)


def _state_cache_metrics(stats: dict[str, Any]) -> Iterator[Any]:
    """The state cache's counters (kept KV states of sequences other requests took)."""
    for key, help_text in (("hits", "Requests that restored a cached KV state."),
                           ("misses", "Requests that found no cached KV state worth restoring."),
                           ("restored_tokens", "Prompt tokens restored from the state cache instead of prefilled."),
                           ("saves", "KV states saved to the state cache."),
                           ("evictions", "KV states dropped to stay within the RAM budget."),
                           ("disk_loads", "Cached KV states read back from --cache-dir."),
                           ("disk_rejected", "State files ignored: damaged, or of another model or format.")):
        yield CounterMetricFamily(f"sarai:state_cache_{key}", help_text, value=stats.get(f"state_cache_{key}", 0))
    for key, help_text in (("bytes", "Bytes of KV states held in RAM."),
                           ("budget_bytes", "The state cache's RAM budget (--cache-ram)."),
                           ("entries", "KV states held in RAM."),
                           ("disk_bytes", "Bytes of KV states in --cache-dir.")):
        yield GaugeMetricFamily(f"sarai:state_cache_{key}", help_text, value=stats.get(f"state_cache_{key}", 0))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.prompt_tokens = Counter("llamacpp:prompt_tokens", "Prompt tokens processed.", registry=r)
        self.reused_tokens = Counter("sarai:prompt_tokens_reused", "Prompt tokens taken from the KV cache "
                                     "(prefix reuse) instead of being evaluated.", registry=r)
        self.tokens_predicted = Counter("llamacpp:tokens_predicted", "Generated tokens.", registry=r)
        self.requests = Counter("sarai:requests", "Finished HTTP requests.", ["endpoint", "status"], registry=r)
        self.rejected = Counter("sarai:requests_rejected", "Requests refused before running.", ["reason"],
                                registry=r)
        self.ttft = Histogram("sarai:time_to_first_token_seconds", "Admission to first generated token.",
                              buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("sarai:inter_token_latency_seconds", "Time between generated tokens of a request.",
                             buckets=ITL_BUCKETS, registry=r)
        self.duration = Histogram("sarai:request_duration_seconds", "Admission to the last token.",
                                  buckets=TTFT_BUCKETS, registry=r)
        self._load: Callable[[], dict[str, Any] | None] = lambda: None
        self._stats: Callable[[], dict[str, Any] | None] = lambda: None
        self.registry.register(_EngineCollector(lambda: self._load(), lambda: self._stats()))

    def bind(self, load: Callable[[], dict[str, Any]], stats: Callable[[], dict[str, Any]]) -> None:
        """Read the engine's gauges through these once the model is loaded."""
        self._load, self._stats = load, stats

    def render(self) -> bytes:
        return generate_latest(self.registry)
