"""Trace context at the edges: what a sender's headers may put on an event, and what a
request to a target carries; and that nothing of OpenTelemetry loads unless asked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esb.envelope import CloudEvent
from esb.tracing import configured, continue_trace, trace_headers, valid_traceparent

GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def event(**attributes: object) -> CloudEvent:
    return CloudEvent.new("shop.order.paid", "urn:shop", {"n": 1}, **attributes)


def test_a_request_continues_the_senders_trace_with_its_state() -> None:
    traced = continue_trace(event(), {"traceparent": GOOD, "tracestate": "vendor=abc"})
    assert traced.traceparent == GOOD
    assert trace_headers(traced) == {"traceparent": GOOD, "tracestate": "vendor=abc"}
    own = "00-11111111111111111111111111111111-2222222222222222-00"
    assert continue_trace(event(traceparent=own), {"traceparent": GOOD}).traceparent == own


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",  # all-zero parent
        GOOD.upper(),
        GOOD + "-extra",
        "ff" + GOOD[2:],  # version ff is forbidden; esb passes on version 00 only
    ],
)
def test_a_malformed_traceparent_starts_nothing_and_travels_nowhere(value: str) -> None:
    assert continue_trace(event(), {"traceparent": value}).traceparent is None
    assert trace_headers(event(traceparent=value)) == {}


@given(st.text(max_size=80), st.text(max_size=600))
def test_any_header_values_give_a_valid_context_or_none(parent: str, state: str) -> None:
    traced = continue_trace(event(), {"traceparent": parent, "tracestate": state})
    headers = trace_headers(traced)
    assert set(headers) <= {"traceparent", "tracestate"}
    if headers:
        assert valid_traceparent(headers["traceparent"]) == parent
        assert all(0x20 <= ord(c) <= 0x7E for c in headers.get("tracestate", ""))


def test_spans_are_asked_for_by_the_standard_variables_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert not configured()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert configured()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not configured()
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not configured()


def test_without_the_variables_nothing_of_opentelemetry_is_imported() -> None:
    code = (
        "import sys, esb.cli, esb.runtime, esb.consumer, esb.tracing\n"
        "from esb.runtime import Process\n"
        "from esb.settings import load_settings\n"
        "assert Process(load_settings(), 'x').tracer is None\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
