"""Prometheus metrics: llama-server's ``llamacpp:*`` names where they exist, plus what nobody exports.

Dashboards and autoscalers written for llama-server read ``llamacpp:requests_processing``,
``llamacpp:requests_deferred``, ``llamacpp:prompt_tokens_total`` and
``llamacpp:tokens_predicted_total``; those keep their names and meaning. Added:
the admission queue, time to first token and inter-token latency histograms,
rejected requests by reason, KV-cache use, and the models: loaded, their memory, load
times, unloads by reason. Every model's series carry a ``model`` label (a server with one
model has one value of it; sum over it for the server's, as an autoscaler's query does).

Gauges that mirror the engine are read at scrape time (a custom collector), so
the scheduler thread never pays for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics", "ModelFacts", "ModelMetrics"]

# Latency buckets (seconds): CPU inference spans milliseconds (a token) to minutes (a long prefill).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: Model loads span a cached small model (0.1 s) to a cold 10B one from a network volume (minutes).
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ITL_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


#: One loaded model, as the collector reads it at scrape time: (name, load facts, engine stats).
ModelFacts = tuple[str, dict[str, Any], dict[str, Any]]


class _EngineCollector(Collector):
    def __init__(self, models: Callable[[], list[ModelFacts]]):
        self._models = models

    def collect(self) -> Iterator[Any]:
        models = self._models()

        def gauge(name: str, help_text: str, value: Callable[[dict[str, Any], dict[str, Any]], float],
                  kind: type = GaugeMetricFamily) -> Any:
            family = kind(name, help_text, labels=["model"])
            for model, load, stats in models:
                family.add_metric([model], value(load, stats))
            return family

        yield GaugeMetricFamily("sarai:models_loaded", "Models loaded now.", value=len(models))
        yield gauge("llamacpp:requests_processing", "Requests decoding now (sequences in use).",
                    lambda load, _: load.get("active", 0))
        yield gauge("llamacpp:requests_deferred", "Requests admitted and waiting for a sequence.",
                    lambda load, _: load.get("waiting", 0))
        yield gauge("sarai:queue_length", "Requests waiting in the admission queue.",
                    lambda load, _: load.get("waiting", 0))
        yield gauge("sarai:queue_capacity", "Most requests that may wait (--max-queue).",
                    lambda load, _: load.get("max_queue", 0))
        yield gauge("sarai:sequences", "Sequences decoded together (--parallel).", lambda load, _: load.get("n_seq", 0))
        yield gauge("sarai:model_memory_bytes", "What the loaded model takes: weights, KV cache, compute buffers, "
                    "state cache.", lambda load, _: load.get("memory_bytes", 0))
        yield gauge("llamacpp:kv_cache_tokens", "KV-cache cells in use (an upper bound with shared prefixes).",
                    lambda load, _: load.get("kv_used", 0) or 0)
        yield gauge("llamacpp:kv_cache_usage_ratio", "KV-cache use (0..1).",
                    lambda load, _: min(1.0, (load.get("kv_used", 0) or 0) / load["kv_size"])
                    if load.get("kv_size") else 0.0)
        for name, key, help_text in (("llamacpp:n_decode", "n_decode_calls", "llama_decode calls."),
                                     ("sarai:batch_tokens", "n_batch_tokens", "Tokens submitted to llama_decode."),
                                     ("sarai:draft_tokens", "n_drafted", "Speculative draft tokens verified."),
                                     ("sarai:draft_tokens_accepted", "n_draft_accepted",
                                      "Speculative draft tokens accepted.")):
            yield gauge(name, help_text, lambda _, stats, key=key: stats.get(key, 0), CounterMetricFamily)
        yield gauge("sarai:decode_seconds", "Time inside llama_decode.",
                    lambda _, stats: stats.get("t_decode_ms", 0.0) / 1000.0, CounterMetricFamily)
        cached = [m for m in models if "state_cache_hits" in m[2]]
        if cached:
            yield from _state_cache_metrics(cached)


def _state_cache_metrics(models: list[ModelFacts]) -> Iterator[Any]:
    """The state caches' counters (kept KV states of sequences other requests took), by model."""
    def family(kind: type, name: str, help_text: str, key: str) -> Any:
        out = kind(name, help_text, labels=["model"])
        for model, _, stats in models:
            out.add_metric([model], stats.get(key, 0))
        return out

    for key, help_text in (("hits", "Requests that restored a cached KV state."),
                           ("misses", "Requests that found no cached KV state worth restoring."),
                           ("restored_tokens", "Prompt tokens restored from the state cache instead of prefilled."),
                           ("saves", "KV states saved to the state cache."),
                           ("evictions", "KV states dropped to stay within the RAM budget."),
                           ("disk_loads", "Cached KV states read back from --cache-dir."),
                           ("disk_rejected", "State files ignored: damaged, or of another model or format.")):
        yield family(CounterMetricFamily, f"sarai:state_cache_{key}", help_text, f"state_cache_{key}")
    for key, help_text in (("bytes", "Bytes of KV states held in RAM."),
                           ("budget_bytes", "The state cache's RAM budget (--cache-ram)."),
                           ("entries", "KV states held in RAM."),
                           ("disk_bytes", "Bytes of KV states in --cache-dir.")):
        yield family(GaugeMetricFamily, f"sarai:state_cache_{key}", help_text, f"state_cache_{key}")


class Metrics:
    """The server's series; each model's are labelled ``model`` (:meth:`for_model`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        m = ["model"]
        self.prompt_tokens = Counter("llamacpp:prompt_tokens", "Prompt tokens processed.", m, registry=r)
        self.reused_tokens = Counter("sarai:prompt_tokens_reused", "Prompt tokens taken from the KV cache "
                                     "(prefix reuse) instead of being evaluated.", m, registry=r)
        self.tokens_predicted = Counter("llamacpp:tokens_predicted", "Generated tokens.", m, registry=r)
        self.requests = Counter("sarai:requests", "Finished HTTP requests.", ["endpoint", "status"], registry=r)
        self.rejected = Counter("sarai:requests_rejected", "Requests refused before running.", ["reason"],
                                registry=r)
        self.ttft = Histogram("sarai:time_to_first_token_seconds", "Admission to first generated token.", m,
                              buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("sarai:inter_token_latency_seconds", "Time between generated tokens of a request.", m,
                             buckets=ITL_BUCKETS, registry=r)
        self.duration = Histogram("sarai:request_duration_seconds", "Admission to the last token.", m,
                                  buckets=TTFT_BUCKETS, registry=r)
        self.load_time = Histogram("sarai:model_load_seconds", "Time to load a model (probe, weights, context).", m,
                                   buckets=LOAD_BUCKETS, registry=r)
        self.unloads = Counter("sarai:model_unloads", "Models unloaded, by reason (lru, idle, keep_alive, request).",
                               ["model", "reason"], registry=r)
        self._models: Callable[[], list[ModelFacts]] = list
        self.registry.register(_EngineCollector(lambda: self._models()))

    def bind(self, models: Callable[[], list[ModelFacts]]) -> None:
        """Read the loaded engines' gauges through ``models`` at scrape time."""
        self._models = models

    def for_model(self, name: str) -> ModelMetrics:
        """The series of one model (children labelled ``model=name``)."""
        return ModelMetrics(self, name)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelMetrics:
    """One model's children of the server's series, with the names a run counts in."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.prompt_tokens = metrics.prompt_tokens.labels(name)
        self.reused_tokens = metrics.reused_tokens.labels(name)
        self.tokens_predicted = metrics.tokens_predicted.labels(name)
        self.ttft = metrics.ttft.labels(name)
        self.itl = metrics.itl.labels(name)
        self.duration = metrics.duration.labels(name)
        self.load_time = metrics.load_time.labels(name)
        self.rejected = metrics.rejected  # by reason, for the server as a whole
        self._unloads = metrics.unloads
        self._name = name

    def unloaded(self, reason: str) -> None:
        self._unloads.labels(self._name, reason).inc()
