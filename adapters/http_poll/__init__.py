"""REST in by polling: a collection's new and changed items as events."""

from adapters.http_poll.source import HttpPollSource
from esb import Adapter

ADAPTER = Adapter(
    name="http-poll",
    description="A REST endpoint polled for new or changed items (an updated-since cursor or a "
    "cursor token; next links, Link headers or page numbers; auth as in the http sink), "
    "backing off while it fails.",
    source=HttpPollSource,
)

__all__ = ["ADAPTER", "HttpPollSource"]
