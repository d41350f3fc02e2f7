"""Settings of the webhook source."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from esb.settings import AdapterSettings

Scheme = Literal["none", "github", "shopify", "stripe", "standard"]


class WebhookSourceSettings(AdapterSettings):
    """Receive JSON webhooks over HTTP and publish each as an event."""

    host: str = Field(default="0.0.0.0", description="Address to listen on.")  # noqa: S104
    port: int = Field(default=8080, ge=0, le=65535, description="Port to listen on; 0 picks one.")
    path: str = Field(default="/webhook", description="Path the sender posts to.")
    max_body_bytes: int = Field(default=1_048_576, ge=1, description="Larger bodies get 413.")
    signature: Scheme = Field(
        default="none",
        description="Signature scheme to verify: github (X-Hub-Signature-256), shopify "
        "(X-Shopify-Hmac-Sha256), stripe (Stripe-Signature), standard (Standard Webhooks).",
    )
    secret: SecretStr | None = Field(
        default=None, description="Signing secret; for standard, the whsec_... value."
    )
    tolerance_seconds: int = Field(
        default=300, ge=1, description="Oldest signed timestamp accepted (stripe, standard)."
    )
    event_type: str = Field(
        default="webhook.received", description="Event type, unless event_type_header gives one."
    )
    event_type_header: str | None = Field(
        default=None,
        description="Header whose value, after type_prefix, is the event type.",
        examples=["X-GitHub-Event", "X-Shopify-Topic"],
    )
    type_prefix: str = Field(default="", description="Prefix for event_type_header values.")
    event_source: str = Field(default="urn:esb:webhook", description="Event source attribute.")
    id_header: str | None = Field(
        default=None,
        description="Header holding the sender's delivery id, used as the event id so a "
        "redelivered webhook is accepted once.",
        examples=["X-GitHub-Delivery", "X-Shopify-Webhook-Id", "webhook-id"],
    )
    accept_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds to wait for the broker's confirm before answering 503.",
    )

    @model_validator(mode="after")
    def _secret_for_signature(self) -> WebhookSourceSettings:
        if self.signature != "none" and self.secret is None:
            raise ValueError(f"signature {self.signature} needs a secret (ESB_ADAPTER__SECRET)")
        return self
