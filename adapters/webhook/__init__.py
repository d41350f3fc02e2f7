"""Webhooks in: an HTTP endpoint that turns each request into an event."""

from adapters.webhook.source import WebhookSource
from esb import Adapter

ADAPTER = Adapter(
    name="http-webhook",
    description="JSON webhooks over HTTP with signature checks (GitHub, Shopify, Stripe, "
    "Standard Webhooks); answers 2xx only after the broker confirmed.",
    source=WebhookSource,
)

__all__ = ["ADAPTER", "WebhookSource"]
