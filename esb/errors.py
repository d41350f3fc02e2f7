"""The one exception tree of esb.

::

    EsbError
    ├── ConfigError            setup mistakes: bad settings, unknown adapter, bad topology
    ├── EnvelopeError          a message that is not a valid CloudEvent (always permanent)
    └── ProcessingError        runtime failures while moving a message
        ├── TransientError     worth retrying: timeouts, refused connections, 5xx
        │   └── BrokerUnavailable   the broker cannot take or confirm a publish now
        │       └── PublishingDown  the publishing channel is closed: not the message's fault
        └── PermanentError     retrying cannot help: validation, 4xx, undecodable input
            └── UnroutableError     the broker had no queue for a mandatory publish

Adapters raise ``TransientError`` or ``PermanentError`` (or subclasses) so the
runtime knows whether to retry a message or park it with its reason.
"""

from __future__ import annotations


class EsbError(Exception):
    """Root of every error esb raises on purpose."""


class ConfigError(EsbError):
    """A setup mistake the operator must fix: the process cannot start."""


class EnvelopeError(EsbError):
    """A message that is not a valid CloudEvent.

    ``field`` names the attribute at fault and ``code`` is a short, stable
    reason used as a metric label and in dead-letter headers.
    """

    def __init__(self, field: str, reason: str, code: str = "invalid") -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.code = code


class ProcessingError(EsbError):
    """A failure while moving or writing one message; ``status`` is the target's HTTP status."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientError(ProcessingError):
    """Worth retrying later: the target or the broker may recover.

    ``retry_after`` (seconds) is the earliest the target wants to be asked
    again, as an HTTP ``Retry-After`` says; the retry waits at least that long.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PermanentError(ProcessingError):
    """Retrying cannot help: the message must be parked with its reason."""


class BrokerUnavailable(TransientError):
    """The broker could not take or confirm a publish (connection lost, nack, timeout)."""


class PublishingDown(BrokerUnavailable):
    """The publish never reached the broker, or its confirm was lost with the channel: the
    publishing channel or the connection is down. Nothing is wrong with the message, so a
    consumer spends no retry on it: it waits for ``Broker.publishing`` and publishes it again
    with the same id."""


class UnroutableError(PermanentError):
    """A mandatory publish was returned: no queue is bound for its routing key."""
