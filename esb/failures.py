"""Failure classification: what to do when a handler raises.

Defaults, overridable per sink by ``failures:`` settings (by exception type
name anywhere in its class hierarchy, or by HTTP status):

==========================================  ===========
failure                                     verdict
==========================================  ===========
:class:`PermanentError`, envelope errors    park
HTTP 400-499 except 408 and 429             park
:class:`TransientError`, HTTP 5xx/408/429   retry
timeouts, refused or reset connections      retry
anything else (a bug, an unknown failure)   retry, then park when retries run out
==========================================  ===========
"""

from __future__ import annotations

from enum import Enum

from esb.errors import EnvelopeError, PermanentError, ProcessingError, TransientError
from esb.settings import FailureSettings


class Verdict(Enum):
    RETRY = "retry"
    PARK = "park"
    PAUSE = "pause"


def http_error(status: int, message: str, retry_after: float | None = None) -> ProcessingError:
    """The error an adapter raises for an HTTP error answer, classified by its status."""
    if status >= 500 or status in (408, 429):
        return TransientError(f"HTTP {status}: {message}", retry_after=retry_after, status=status)
    return PermanentError(f"HTTP {status}: {message}", status=status)


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _listed(exc: BaseException, entries: list[str | int]) -> bool:
    status = _status(exc)
    names = _names(exc)
    return any(
        (isinstance(e, int) and e == status) or (isinstance(e, str) and e in names) for e in entries
    )


def classify(exc: BaseException, overrides: FailureSettings | None = None) -> Verdict:
    """Decide whether ``exc`` is retried, parked, or pauses the sink."""
    if overrides is not None:
        if _listed(exc, overrides.pause):
            return Verdict.PAUSE
        if _listed(exc, overrides.park):
            return Verdict.PARK
        if _listed(exc, overrides.retry):
            return Verdict.RETRY
    if isinstance(exc, PermanentError | EnvelopeError):
        return Verdict.PARK
    status = _status(exc)
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return Verdict.PARK
    return Verdict.RETRY


def retry_after(exc: BaseException) -> float | None:
    """Seconds the failure asks us to wait, when it says (HTTP Retry-After)."""
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, int | float) else None
