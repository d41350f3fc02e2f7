"""Failure classification and the circuit breaker's state machine."""

from __future__ import annotations

import pytest

from esb import EnvelopeError, PermanentError, TransientError
from esb.circuit import CircuitBreaker, State
from esb.failures import Verdict, classify, http_error, retry_after
from esb.settings import CircuitSettings, FailureSettings


class LockTimeout(Exception):
    pass


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (PermanentError("no"), Verdict.PARK),
        (EnvelopeError("id", "missing"), Verdict.PARK),
        (TransientError("later"), Verdict.RETRY),
        (TimeoutError(), Verdict.RETRY),
        (ConnectionRefusedError(), Verdict.RETRY),
        (http_error(503, "Service Unavailable"), Verdict.RETRY),
        (http_error(429, "Too Many Requests", retry_after=30), Verdict.RETRY),
        (http_error(408, "Request Timeout"), Verdict.RETRY),
        (http_error(422, "Unprocessable"), Verdict.PARK),
        (http_error(404, "Not Found"), Verdict.PARK),
        (LockTimeout(), Verdict.RETRY),
    ],
)
def test_default_classification(error: Exception, verdict: Verdict) -> None:
    assert classify(error) is verdict


def test_operators_override_by_type_name_and_status() -> None:
    overrides = FailureSettings(retry=[409], park=["LockTimeout"], pause=[401])
    assert classify(http_error(409, "Conflict"), overrides) is Verdict.RETRY
    assert classify(LockTimeout(), overrides) is Verdict.PARK
    assert classify(http_error(401, "Unauthorized"), overrides) is Verdict.PAUSE
    assert classify(http_error(422, "Unprocessable"), overrides) is Verdict.PARK


def test_retry_after_comes_from_the_error() -> None:
    assert retry_after(http_error(429, "slow down", retry_after=30)) == 30.0
    assert retry_after(TimeoutError()) is None


def test_the_circuit_opens_after_the_threshold_and_backs_off_while_probes_fail() -> None:
    now = [0.0]
    changes: list[State] = []
    breaker = CircuitBreaker(
        CircuitSettings(threshold=3, open_seconds=2, max_open_seconds=5),
        on_change=changes.append,
        clock=lambda: now[0],
    )
    assert [breaker.failure() for _ in range(3)] == [False, False, True]
    assert breaker.seconds_until_probe() == 2
    now[0] = 2.0
    breaker.probing()
    assert breaker.failure() is True
    assert breaker.seconds_until_probe() == 4
    now[0] = 6.0
    breaker.probing()
    breaker.failure()
    assert breaker.seconds_until_probe() == 5
    breaker.probing()
    breaker.success()
    assert changes == [
        State.OPEN,
        State.HALF_OPEN,
        State.OPEN,
        State.HALF_OPEN,
        State.OPEN,
        State.HALF_OPEN,
        State.CLOSED,
    ]
    assert breaker.wait == 2


def test_a_disabled_circuit_never_opens() -> None:
    breaker = CircuitBreaker(CircuitSettings(threshold=0))
    assert not any(breaker.failure() for _ in range(100))
    assert breaker.state is State.CLOSED
