"""A circuit breaker for a sink's target.

After ``threshold`` consecutive transient failures the circuit opens: the
consumer stops taking messages (they wait in the queue without spending
their retries) and probes the target after ``open_seconds``, doubling the
wait up to ``max_open_seconds``. A probe that succeeds closes the circuit; one
that fails opens it again. An operator-listed "pause" failure opens it at
once. Its state is the ``esb_circuit_state`` gauge: 0 closed, 1 open,
2 half-open (probing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from esb.settings import CircuitSettings


class State(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """The state machine; the consumer acts on it. ``clock`` is injectable for tests."""

    def __init__(
        self,
        settings: CircuitSettings,
        on_change: Callable[[State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.state = State.CLOSED
        self.failures = 0
        self.wait = settings.open_seconds
        self.opened_at = 0.0
        self._on_change = on_change
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.settings.threshold > 0

    def _set(self, state: State) -> None:
        if state != self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(state)

    def success(self) -> None:
        """A write succeeded: the target answers."""
        self.failures = 0
        self.wait = self.settings.open_seconds
        self._set(State.CLOSED)

    def failure(self) -> bool:
        """A transient failure; True when it opened the circuit."""
        if not self.enabled:
            return False
        self.failures += 1
        if self.state == State.HALF_OPEN or self.failures >= self.settings.threshold:
            self.trip()
            return True
        return False

    def trip(self) -> None:
        """Open now (a pause failure, or the threshold reached); back off if it was probing."""
        if self.state == State.HALF_OPEN:
            self.wait = min(self.wait * 2, self.settings.max_open_seconds)
        self.opened_at = self._clock()
        self._set(State.OPEN)

    def seconds_until_probe(self) -> float:
        return max(0.0, self.opened_at + self.wait - self._clock())

    def probing(self) -> None:
        self._set(State.HALF_OPEN)
