"""Distributed tracing: a span per hop, exported over OTLP, when asked for.

Every event carries W3C trace context in the CloudEvents distributed-tracing
extension (``traceparent``, and ``tracestate`` among its extensions) whether or
not anything traces: a webhook source continues the sender's ``traceparent``,
every hop passes it on, the http sink sends it on its request. With the
``otel`` extra installed and ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set, each hop also makes a span
following OpenTelemetry's messaging conventions (``send <exchange>`` for a
source, ``process <queue>`` for a consumer) as a child of the event's context,
and the events it sends carry the span's context instead. Without them nothing
of OpenTelemetry is imported, and a hop pays one dictionary lookup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from esb.envelope import CloudEvent

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)

#: A version-00 W3C traceparent: not all-zero ids, lowercase hex.
_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
#: W3C tracestate: at most 32 list members, 512 characters kept.
_TRACESTATE = re.compile(r"[\x20-\x7e]{1,512}")
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_SPAN: ContextVar[Span | None] = ContextVar("esb_span", default=None)


def valid_traceparent(value: object) -> str | None:
    """``value`` when it is a W3C traceparent esb passes on; None otherwise (anyone can send
    one: a malformed value starts no trace and travels nowhere)."""
    if isinstance(value, str) and _TRACEPARENT.fullmatch(value):
        return value
    return None


def continue_trace(event: CloudEvent, headers: Mapping[str, str]) -> CloudEvent:
    """``event`` continuing the trace of the request that brought it (its ``traceparent``
    and ``tracestate`` headers), unless the event names one itself."""
    parent = valid_traceparent(headers.get("traceparent"))
    if parent is None or event.traceparent is not None:
        return event
    update: dict[str, Any] = {"traceparent": parent}
    state = headers.get("tracestate")
    if isinstance(state, str) and _TRACESTATE.fullmatch(state):
        update["extensions"] = {**event.extensions, "tracestate": state}
    return event.model_copy(update=update)


def trace_headers(event: CloudEvent) -> dict[str, str]:
    """The trace context headers a request made for ``event`` carries."""
    parent = valid_traceparent(event.traceparent)
    if parent is None:
        return {}
    headers = {"traceparent": parent}
    state = event.extensions.get("tracestate")
    if isinstance(state, str) and _TRACESTATE.fullmatch(state):
        headers["tracestate"] = state
    return headers


def configured() -> bool:
    """Whether the standard ``OTEL_*`` variables ask for spans to be exported."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "otlp":
        return False
    return any(os.environ.get(name) for name in ENDPOINTS)


class Tracer:
    """Spans of one esb process, exported over OTLP/HTTP in batches."""

    def __init__(self, service: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service)})
        self._provider = TracerProvider(resource=resource)
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("esb")
        self._propagator = TraceContextTextMapPropagator()
        self._kinds = {"send": SpanKind.PRODUCER, "process": SpanKind.CONSUMER}
        self._error = Status(StatusCode.ERROR)

    @contextlib.contextmanager
    def span(
        self, operation: str, destination: str, event: CloudEvent, **attributes: Any
    ) -> Iterator[CloudEvent]:
        """A span of ``operation`` (send, process) on ``destination``, a child of the event's
        context; yields the event carrying the span's context instead."""
        carrier = {"traceparent": event.traceparent or ""}
        state = event.extensions.get("tracestate")
        if isinstance(state, str):
            carrier["tracestate"] = state
        parent = self._propagator.extract(carrier)
        span = self._tracer.start_span(
            f"{operation} {destination}",
            context=parent,
            kind=self._kinds[operation],
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": operation,
                "messaging.operation.name": operation,
                "messaging.destination.name": destination,
                "messaging.message.id": event.id,
                "cloudevents.event_id": event.id,
                "cloudevents.event_type": event.type,
                "cloudevents.event_source": event.source,
                **(
                    {"messaging.message.conversation_id": event.correlationid}
                    if event.correlationid
                    else {}
                ),
                **{k: v for k, v in attributes.items() if v is not None},
            },
        )
        token = _SPAN.set(span)
        context = span.get_span_context()
        carried = event.model_copy(
            update={
                "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-"
                f"{int(context.trace_flags):02x}"
            }
        )
        try:
            yield carried
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(self._error)
            raise
        finally:
            _SPAN.reset(token)
            span.end()

    def shutdown(self) -> None:
        """Export what is still buffered, then stop."""
        self._provider.shutdown()


def outcome(value: str, failed: bool = False) -> None:
    """Name the outcome of the hop this task's span covers (``esb.outcome``)."""
    span = _SPAN.get()
    if span is None:
        return
    span.set_attribute("esb.outcome", value)
    if failed:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, value))


def tracer_for(service: str) -> Tracer | None:
    """The process's tracer, or None when spans are not asked for or cannot be made."""
    if not configured():
        return None
    try:
        return Tracer(service)
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed "
            "(pip install 'esb[otel]'): no spans are made"
        )
        return None
