"""Prometheus metrics of the decision service, on a registry of its own (one per process, so tests never share state).

They live in the shadow process, which counts every decision from its frame (the request path updates no metric);
the API process adds its own few (see :class:`shadowgate.serving.sidecar.SidecarCollector`).

Label children are bound once and cached: an ``observe`` on the hot path is a dict lookup and a lock, ~1 µs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Scoring takes microseconds; requests take a fraction of a millisecond to a few milliseconds.
MODEL_BUCKETS = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2)
REQUEST_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.5)


class _EventLogCollector(Collector):
    """Reads the shadow process's commit counters at scrape time (no bookkeeping on the hot path)."""

    def __init__(self, stats: Callable[[], Any]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        s = self._stats()
        for name, value, doc in (
            ("written", s.written, "Events written to a Redis Stream."),
            ("duplicates_skipped", s.duplicates_skipped, "Outcomes not written again (same id within the window)."),
            ("dead_lettered", s.dead_lettered, "Journal records that could not become an event (kept on disk)."),
            ("inherited", s.inherited, "Events committed from records an earlier shadow process left in the journal."),
            ("commit_conflicts", s.conflicts, "Commits refused because another process moved the journal position."),
        ):
            family = CounterMetricFamily(f"shadowgate_events_{name}", doc)
            family.add_metric([], float(value))
            yield family
        up = GaugeMetricFamily("shadowgate_redis_up", "1 when the shadow process can reach Redis.")
        up.add_metric([], 1.0 if s.redis_up else 0.0)
        yield up


class ServingMetrics:
    """Every metric the service exposes on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.model_latency = Histogram(
            "shadowgate_model_latency_seconds",
            "Scoring time per model and row, by alias and role (decider or shadow).",
            ["alias", "role"],
            buckets=MODEL_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            "shadowgate_request_latency_seconds",
            "Decision time inside the service per request (features, assignment, scoring, policy, hand-off).",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "shadowgate_decisions",
            "Decisions served, by outcome, arm and serving alias.",
            ["decision", "arm", "alias"],
            registry=r,
        )
        self.agreement = Counter(
            "shadowgate_shadow_agreement",
            "Shadow decisions compared with the served decision, by model alias and whether they agreed.",
            ["alias", "agree"],
            registry=r,
        )
        self.model_failures = Counter(
            "shadowgate_model_failures", "Scoring failures by alias and reason.", ["alias", "reason"], registry=r
        )
        self.shadow_skipped = Counter(
            "shadowgate_shadow_skipped",
            "Shadow scores not computed, by alias and reason.",
            ["alias", "reason"],
            registry=r,
        )
        self.shadow_lag = Gauge(
            "shadowgate_shadow_lag_seconds",
            "How long the oldest request of the latest shadow batch waited for the shadow process (keeping up: ms).",
            registry=r,
        )
        self.fallback = Counter(
            "shadowgate_fallback_decisions", "Decisions made by the rule-based fallback (no model loaded).", registry=r
        )
        self._bound: dict[tuple[Any, ...], Any] = {}

    def bind(self, metric: Any, *labels: str) -> Any:
        """The cached child of ``metric`` for ``labels``."""
        key = (id(metric), *labels)
        child = self._bound.get(key)
        if child is None:
            child = self._bound[key] = metric.labels(*labels)
        return child

    def watch_event_log(self, stats: Callable[[], Any]) -> None:
        self.registry.register(_EventLogCollector(stats))
