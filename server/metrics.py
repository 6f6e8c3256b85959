"""Prometheus metrics on their own HTTP port (Triton uses :8002 for the same)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from zoo.jobs.store import JobCensus
from zoo.serving.runtime import LoadedModel
from zoo.serving.stats import ModelStats

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _ModelCollector(Collector):
    """Reads the data plane's statistics at scrape time; nothing is copied on the hot path."""

    def __init__(
        self, stats: Callable[[], list[ModelStats]], loaded: Callable[[], list[LoadedModel]]
    ) -> None:
        self._stats = stats
        self._loaded = loaded

    def collect(self) -> Iterator[Any]:
        labels = ["model", "version"]
        inferences = CounterMetricFamily(
            "zoo_inference_rows", "Rows (images) computed", labels=labels
        )
        executions = CounterMetricFamily(
            "zoo_inference_executions", "ONNX Runtime calls (batches)", labels=labels
        )
        failures = CounterMetricFamily("zoo_inference_failures", "Failed requests", labels=labels)
        queue = CounterMetricFamily(
            "zoo_inference_queue_seconds", "Time requests waited to be batched", labels=labels
        )
        compute = CounterMetricFamily(
            "zoo_inference_compute_seconds", "Time in ONNX Runtime", labels=labels
        )
        batches = CounterMetricFamily(
            "zoo_batch_executions", "Executions by batch size", labels=[*labels, "batch_size"]
        )
        rejected = CounterMetricFamily(
            "zoo_inference_rejected", "Requests refused because the queue was full", labels=labels
        )
        expired = CounterMetricFamily(
            "zoo_inference_expired",
            "Requests dropped uncomputed: deadline or queue timeout passed while queued",
            labels=labels,
        )
        for s in self._stats():
            key = [s.name, str(s.version)]
            inferences.add_metric(key, s.inference_count)
            executions.add_metric(key, s.execution_count)
            failures.add_metric(key, s.fail.count)
            queue.add_metric(key, s.queue.ns / 1e9)
            compute.add_metric(key, s.compute_infer.ns / 1e9)
            rejected.add_metric(key, s.rejected)
            expired.add_metric(key, s.expired)
            for size, batch in sorted(s.batches.items()):
                batches.add_metric([*key, str(size)], batch.count)
        loaded = GaugeMetricFamily(
            "zoo_model_loaded", "1 for each loaded model version", labels=[*labels, "provider"]
        )
        models = self._loaded()
        for m in models:
            loaded.add_metric([m.name, str(m.version), m.provider], 1)
        count = GaugeMetricFamily("zoo_models_loaded", "Model versions loaded")
        count.add_metric([], len(models))
        yield from (inferences, executions, failures, queue, compute, batches, rejected, expired)
        yield from (loaded, count)


class _JobCollector(Collector):
    """The job queue as the store sees it, read at scrape time on the metrics thread (never on
    the event loop). Every server sharing a store reports the same figures: aggregate with max."""

    def __init__(self, census: Callable[[], JobCensus]) -> None:
        self._census = census

    def collect(self) -> Iterator[Any]:
        try:
            census = self._census()
        except Exception as e:  # a database down must not take the inference metrics with it
            log.warning("job metrics skipped: the job store did not answer: %s", e)
            return
        jobs = GaugeMetricFamily("zoo_jobs", "Jobs in the store by state", labels=["state"])
        for state, count in census.counts.items():
            jobs.add_metric([state.value], count)
        silence = GaugeMetricFamily(
            "zoo_jobs_longest_heartbeat_silence_seconds",
            "Longest time since a worker holding a job last beat (0: none held)",
        )
        silence.add_metric([], census.longest_silence_s)
        yield from (jobs, silence)


class _LabelCollector(Collector):
    """Label changes by model, label and action, counted from each model's history in the
    repository at scrape time (the history only grows), so changes made by a fine-tune job,
    the CLI or another server on the same repository count too, and counts survive restarts.
    Every server on one repository reports the same figures: aggregate with max."""

    def __init__(self, changes: Callable[[], dict[tuple[str, str, str], int]]) -> None:
        self._changes = changes

    def collect(self) -> Iterator[Any]:
        family = CounterMetricFamily(
            "zoo_label_changes",
            "Changes of a version label (promote, rollback) by model, label and action",
            labels=["model", "label", "action"],
        )
        for key, count in sorted(self._changes().items()):
            family.add_metric(list(key), count)
        yield family


class Metrics:
    """The server's registry: request counts and latencies, plus the models' statistics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "zoo_requests",
            "gRPC requests by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "zoo_request_duration_seconds",
            "gRPC request latency by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Requests being served now (queued or computing), per pod: what KEDA scales serving
        # on (deploy/kubernetes). Streams are long-lived and not requests, so not counted.
        self.in_flight = Gauge(
            "zoo_requests_in_flight",
            "gRPC requests in progress by method",
            ["method"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "zoo_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "zoo_http_request_duration_seconds",
            "HTTP request latency by route template (a job event stream: until it ends)",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._http: Any = None

    def watch_models(
        self, stats: Callable[[], list[ModelStats]], loaded: Callable[[], list[LoadedModel]]
    ) -> None:
        self.registry.register(_ModelCollector(stats, loaded))

    def watch_labels(self, changes: Callable[[], dict[tuple[str, str, str], int]]) -> None:
        self.registry.register(_LabelCollector(changes))

    def watch_jobs(self, census: Callable[[], JobCensus]) -> None:
        self.registry.register(_JobCollector(census))

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_latency.labels(method, route).observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint; returns the bound port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
