"""Settings of the webhook source."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from adapters.webhook.signatures import signing_key
from esb import DEFAULT_MAX_BODY_BYTES, SHORT_STRING_BYTES, AdapterSettings

Scheme = Literal["none", "github", "shopify", "stripe", "standard"]

#: An event type is its routing key: dot-separated topic words, so no value can carry the
#: ``*`` and ``#`` wildcards, spaces or empty words into the exchange's matching.
TYPE_PATTERN = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")

#: The Standard Webhooks delivery id, covered by its signature.
STANDARD_ID_HEADER = "webhook-id"


def is_event_type(value: str) -> bool:
    """True when ``value`` can be an event type: topic words (ASCII, so characters are bytes)
    within an AMQP short string."""
    return TYPE_PATTERN.fullmatch(value) is not None and len(value) <= SHORT_STRING_BYTES


class WebhookSourceSettings(AdapterSettings):
    """Receive JSON webhooks over HTTP and publish each as an event."""

    host: str = Field(
        examples=["127.0.0.1"],
        default="0.0.0.0",  # noqa: S104 (a container listens on every interface)
        description="Address to listen on.",
    )
    port: int = Field(
        examples=[9000], default=8080, ge=0, le=65535, description="Port to listen on; 0 picks one."
    )
    path: str = Field(
        examples=["/hooks/shopify"], default="/webhook", description="Path the sender posts to."
    )
    max_body_bytes: int = Field(
        examples=[262_144],
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1,
        description="Larger bodies get 413; at most the process's broker.max_body_bytes.",
    )
    signature: Scheme = Field(
        examples=["shopify"],
        default="none",
        description="Signature scheme to verify: github (X-Hub-Signature-256), shopify "
        "(X-Shopify-Hmac-Sha256), stripe (Stripe-Signature), standard (Standard Webhooks).",
    )
    secret: SecretStr | None = Field(
        examples=["whsec_example"],
        default=None,
        description="Signing secret; for standard, the whsec_... value.",
    )
    tolerance_seconds: int = Field(
        examples=[600],
        default=300,
        ge=1,
        description="Oldest signed timestamp accepted (stripe, standard).",
    )
    event_type: str = Field(
        examples=["shop.order.created"],
        default="webhook.received",
        description="Event type, unless event_type_header or event_type_field gives one.",
    )
    event_type_header: str | None = Field(
        default=None,
        description="Header whose value, after type_prefix, is the event type; not covered by "
        "any signature.",
        examples=["X-GitHub-Event", "X-Shopify-Topic"],
    )
    event_type_field: str | None = Field(
        default=None,
        description="Top-level field of the JSON body whose value, after type_prefix, is the "
        "event type; covered by the signature.",
        examples=["type"],
    )
    type_prefix: str = Field(
        examples=["github."],
        default="",
        description="Prefix for event_type_header and event_type_field values.",
    )
    event_source: str = Field(
        examples=["urn:shopify"], default="urn:esb:webhook", description="Event source attribute."
    )
    id_header: str | None = Field(
        default=None,
        description="Header holding the sender's delivery id. The event id with signature none "
        "or standard (webhook-id, signed); with github, shopify and stripe it is not signed, so "
        "the id comes from the signed body and this header rides as the deliveryid extension.",
        examples=["X-GitHub-Delivery", "X-Shopify-Webhook-Id", "webhook-id"],
    )
    accept_timeout: float = Field(
        examples=[5.0],
        default=10.0,
        gt=0,
        description="Seconds to wait for the broker's confirm before answering 503.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> WebhookSourceSettings:
        if self.signature != "none" and self.secret is None:
            raise ValueError(f"signature {self.signature} needs a secret (ESB_ADAPTER__SECRET)")
        if self.signature == "standard" and self.secret is not None:
            try:
                signing_key("standard", self.secret.get_secret_value())
            except ValueError:  # binascii.Error: not base64
                raise ValueError("the standard secret is not whsec_ followed by base64") from None
        if (
            self.signature == "standard"
            and self.id_header is not None
            and self.id_header.lower() != STANDARD_ID_HEADER
        ):
            raise ValueError(
                "signature standard: the event id is the signed webhook-id; "
                f"id_header must be unset or {STANDARD_ID_HEADER}"
            )
        if self.event_type_header is not None and self.event_type_field is not None:
            raise ValueError("set event_type_header or event_type_field, not both")
        if not is_event_type(self.event_type):
            raise ValueError(f"event_type {self.event_type!r} is not dot-separated topic words")
        if self.type_prefix and not is_event_type(self.type_prefix + "x"):
            raise ValueError(f"type_prefix {self.type_prefix!r} is not topic words and a dot")
        return self
