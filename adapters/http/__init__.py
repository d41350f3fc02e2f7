"""REST out: send each event to a partner or internal API."""

from adapters.http.sink import HttpSink
from esb import Adapter

ADAPTER = Adapter(
    name="http",
    description="Events to a REST API: URL templates, auth (bearer, basic, API key, OAuth2), "
    "idempotency keys, retry/park by status, rate and concurrency limits.",
    sink=HttpSink,
)

__all__ = ["ADAPTER", "HttpSink"]
