"""Prometheus metrics of one esb process, on a registry passed in (never a global)."""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Bound(Generic[M]):
    """One metric's children for one service, each bound on first use: ``labels()`` takes a
    lock and builds a tuple on every call, too dear for once per message. Label values are
    names from configuration (routes, step kinds), so the children are few."""

    def __init__(self, metric: M, service: str) -> None:
        self._metric = metric
        self._service = service
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(self._service, *labels)
        return child


class Metrics:
    """The ``esb_`` metrics; labels carry service, adapter, outcome and reason, never payload.

    No ``_created`` series: prometheus-client adds one per counter and histogram child, a
    timestamp no rule or panel reads, doubling what each scrape carries.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide; unannotated
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "esb_published",
            "Events published to the broker, by outcome.",
            ["service", "outcome"],
            registry=r,
        )
        self.publish_seconds = Histogram(
            "esb_publish_seconds",
            "Time from publish to broker confirm.",
            ["service"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.consumed = Counter(
            "esb_consumed",
            "Deliveries handled by a consumer, by outcome (ok, parked, requeued).",
            ["service", "adapter", "outcome"],
            registry=r,
        )
        self.handle_seconds = Histogram(
            "esb_handle_seconds",
            "Time to handle one delivery, decode to ack.",
            ["service", "adapter"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "esb_envelope_rejected",
            "Messages refused as invalid CloudEvents, by reason.",
            ["service", "reason"],
            registry=r,
        )
        self.source_refused = Counter(
            "esb_source_refused",
            "Inputs a source could not turn into events (bad signature, malformed row), by reason.",
            ["service", "adapter", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "esb_duplicates",
            "Deliveries a sink had already applied, acked without a write.",
            ["service"],
            registry=r,
        )
        self.in_flight = Gauge(
            "esb_in_flight",
            "Deliveries being handled right now.",
            ["service"],
            registry=r,
        )
        self.circuit_state = Gauge(
            "esb_circuit_state",
            "A consumer's circuit: 0 closed, 1 open, 2 half-open (probing).",
            ["service"],
            registry=r,
        )
        self.broker_connected = Gauge(
            "esb_broker_connected",
            "1 while the broker connection is open.",
            ["service"],
            registry=r,
        )
        self.routed = Counter(
            "esb_routed",
            "Copies the router sent down a route.",
            ["service", "route"],
            registry=r,
        )
        self.unrouted = Counter(
            "esb_unrouted",
            "Events no route matched, sent to esb.unrouted.",
            ["service"],
            registry=r,
        )
        self.route_errors = Counter(
            "esb_route_condition_errors",
            "Route conditions that failed to evaluate on an event (treated as no match).",
            ["service", "route"],
            registry=r,
        )
        self.route_seconds = Histogram(
            "esb_route_seconds",
            "Time to match one event against every route.",
            ["service"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            "esb_routes_reloads",
            "Route reloads (SIGHUP or a watched file change), by outcome.",
            ["service", "outcome"],
            registry=r,
        )
        self.steps = Counter(
            "esb_steps",
            "Transformer steps run, by kind and outcome.",
            ["service", "kind", "outcome"],
            registry=r,
        )
        self.step_seconds = Histogram(
            "esb_step_seconds",
            "Time to run one transformer step.",
            ["service", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.broker_reconnects = Counter(
            "esb_broker_reconnects",
            "Times the connection was re-established.",
            ["service"],
            registry=r,
        )
