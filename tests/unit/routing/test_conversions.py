"""convert steps are bounded whatever a value holds: a hostile value fails the step with
a permanent error naming the field, in milliseconds, and never yields what JSON cannot carry."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esb.envelope import CloudEvent
from esb.errors import PermanentError
from esb.routing.steps import StepSpec, compile_step

CONVERSIONS: dict[str, dict[str, Any]] = {
    "int": {"number": "int"},
    "float": {"number": "float"},
    "money": {"decimal": {"places": 2}},
    "money-float": {"decimal": {"places": 2, "as": "number"}},
    "unit": {"unit": {"from": "g", "to": "kg"}},
    "unit-places": {"unit": {"from": "lb", "to": "kg", "places": 3}},
    "date": {"date": {"from": "%d.%m.%Y"}},
    "datetime": {"datetime": {"to_timezone": "UTC"}},
}


def convert(kind: str, value: Any) -> Any:
    spec = StepSpec("convert", "v", {"conversions": [{"field": "v", **CONVERSIONS[kind]}]})
    event = CloudEvent.new("shop.order", "urn:test", {"v": value})
    return compile_step(spec).apply(event)["v"]


def fails_quickly(kind: str, value: Any, reason: str) -> None:
    started = time.perf_counter()
    with pytest.raises(PermanentError, match=f"field v: .*{reason}"):
        convert(kind, value)
    assert time.perf_counter() - started < 0.2


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("int", "1e1000000", "out of range"),  # int(Decimal(...)) took 28 s
        ("unit", "0." + "1" * 1_000_000, "too many"),  # Fraction(Decimal(...)) took 44 s
        ("unit", "1e999999999", "out of range"),
        ("unit-places", "1e300", "too many digits"),
        ("int", "1" * 100_000, "too many"),
        ("int", str(2**64), "does not fit 64 bits"),
        ("int", "-" + str(2**63 + 1), "does not fit 64 bits"),
        ("float", "1e399", "beyond the range of a float"),  # was inf, sent on as null
        ("float", "NaN", "not a finite number"),
        ("money", "NaN", "not a finite number"),  # was the string "NaN"
        ("money", "-Infinity", "not a finite number"),
        ("money", "9" * 40, "too many digits"),
        ("money", "1" * 1_000_000, "too many"),
        ("money", "twelve", "is not a number"),
        ("date", "1" * 1_000_000, "too many"),
        ("datetime", " " * 1_000_000, "too many"),
        ("datetime", "0001-01-01T00:00:00+14:00", "out of range"),
        ("int", True, "got bool"),
        ("int", {"a": 1}, "got dict"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_hostile_values_fail_the_step_quickly(kind: str, value: Any, reason: str) -> None:
    fails_quickly(kind, value, reason)


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("int", "42", 42),
        ("int", str(2**64 - 1), 2**64 - 1),
        ("int", str(-(2**63)), -(2**63)),
        ("int", "1e3", 1000),
        ("float", " 0.75 ", 0.75),
        ("money", "1234,5", "1234.50"),
        ("money", 19.995, "20.00"),
        ("money-float", "0.125", 0.12),
        ("unit", 1250, 1.25),
        ("unit-places", 10, 4.536),
        ("date", "24.11.2026", "2026-11-24"),
    ],
)
def test_ordinary_values_convert_as_before(kind: str, value: Any, expected: Any) -> None:
    assert convert(kind, value) == expected


NUMERIC = st.from_regex(r"\A[-+ ]?[0-9]{0,30}[.,]?[0-9]{0,30}([eE][-+]?[0-9]{1,12})?\Z")
VALUES = st.one_of(
    NUMERIC,
    st.text(max_size=40),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.booleans(),
    st.none(),
)


@settings(max_examples=500, deadline=None)
@given(kind=st.sampled_from(sorted(CONVERSIONS)), value=VALUES)
def test_any_value_converts_to_json_or_fails_permanently(kind: str, value: Any) -> None:
    """No other exception escapes (it would be retried as if the target failed), and no
    result is a float JSON cannot carry or an integer beyond 64 bits."""
    started = time.perf_counter()
    try:
        result = convert(kind, value)
    except PermanentError:
        return
    finally:
        assert time.perf_counter() - started < 0.2
    if isinstance(result, float):
        assert math.isfinite(result)
    if isinstance(result, int):
        assert -(2**63) <= result < 2**64
