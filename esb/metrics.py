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


#: Ages from occurrence to applied: sub-second flows to a day-old backlog.
AGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 21600)
#: Waits in a queue, a retry delay included when the copy was published to one.
WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: How a consumer's deliveries end (esb_consumed_total's outcome label).
CONSUME_OUTCOMES = ("ok", "parked", "retried", "returned", "requeued", "rejected", "unsettled")
#: Where label values no longer get a series of their own.
OTHER = "other"


class FewValues:
    """Label values read from messages (the route a slip names, an event type), which anyone
    who can publish can forge: the first ``limit`` distinct combinations, each value at
    most ``longest`` characters, get a series each; the rest share :data:`OTHER`, so
    forged values cannot grow a scrape without bound."""

    def __init__(self, limit: int = 100, longest: int = 120) -> None:
        self.limit = limit
        self.longest = longest
        self._seen: set[tuple[str, ...]] = set()

    def __call__(self, *values: str) -> tuple[str, ...]:
        if values in self._seen:
            return values
        if len(self._seen) >= self.limit or any(len(value) > self.longest for value in values):
            return (OTHER,) * len(values)
        self._seen.add(values)
        return values


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
            "Events published to the broker, by outcome: ok, unroutable (no queue bound for it), "
            "nacked (the broker refused it), unconfirmed (connection lost or no confirm in time).",
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
            f"Deliveries handled by a consumer, by outcome: {', '.join(CONSUME_OUTCOMES)}.",
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
        self.queue_wait_seconds = Histogram(
            "esb_queue_wait_seconds",
            "Time a delivery waited in its queue, from the publish that put it there "
            "(a retry's delay included) to its arrival at this consumer.",
            ["service", "queue"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.event_age_seconds = Histogram(
            "esb_event_age_seconds",
            "Time from an event's occurrence (its CloudEvents time, kept by every hop) to its "
            "being applied by this sink: the flow's end-to-end latency. route: the route that "
            "carried it (- without one); the first 100 route and type pairs, then other.",
            ["service", "route", "type"],
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.age_objective_seconds = Gauge(
            "esb_age_objective_seconds",
            "The age (occurrence to applied) this sink's flow should stay under at p99, from "
            "its consume.age_objective setting; the EsbFlowLate alert compares against it.",
            ["service"],
            registry=r,
        )
        self.rejected = Counter(
            "esb_envelope_rejected",
            "Messages refused as invalid CloudEvents, by reason: missing_attribute, "
            "wrong_specversion, invalid_attribute, invalid_json, invalid_encoding, duplicate_key, "
            "too_deep, number_out_of_range, headers_too_large, too_large, unencodable, "
            "undecodable.",
            ["service", "reason"],
            registry=r,
        )
        self.source_refused = Counter(
            "esb_source_refused",
            "Inputs a source could not turn into events, by reason: an envelope code "
            "(invalid_json, too_large, invalid_attribute, ...), bad_signature, bad_file, "
            "undecodable.",
            ["service", "adapter", "reason"],
            registry=r,
        )
        self.adapter_operations = Counter(
            "esb_adapter_operations",
            "What an adapter did, by operation and result: request (a webhook source's "
            "requests, by the HTTP status it answered), response (an http sink's target "
            "answers, by status class 2xx to 5xx, timeout, or error without an answer), poll "
            "(an sql source's polls: rows, empty), row (rows read), file (a files source's "
            "files: read, refused), correlate (missing: an event without its "
            "source.correlation_field).",
            ["service", "adapter", "operation", "result"],
            registry=r,
        )
        self.journal_records = Counter(
            "esb_journal_records",
            "Hop records this process wrote for the journal (journal.enabled), by result: "
            "sent, or dropped (the broker did not take them; the flow is never held for one).",
            ["service", "result"],
            registry=r,
        )
        self.journal_stored = Counter(
            "esb_journal_stored_records",
            "Hop records the journal process stored, or refused (not a valid record; "
            "result=refused).",
            ["service", "result"],
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
            "Route reloads (SIGHUP or a watched file change), by outcome: ok, refused.",
            ["service", "outcome"],
            registry=r,
        )
        self.steps = Counter(
            "esb_steps",
            "Transformer steps run, by kind (a step kind of the loaded routes: map, convert, "
            "validate, filter, a custom step's name) and outcome: ok, failed.",
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
