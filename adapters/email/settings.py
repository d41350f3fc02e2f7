"""Settings of the e-mail sink."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from esb import AdapterSettings


class EmailSinkSettings(AdapterSettings):
    """Send each event as an e-mail through an SMTP server, from templates."""

    host: str = Field(description="SMTP server.", examples=["smtp.example.com"])
    port: int = Field(examples=[465], default=587, ge=1, le=65535, description="SMTP port.")
    username: str | None = Field(
        examples=["esb@example.com"], default=None, description="Login, when the server needs one."
    )
    password: SecretStr | None = Field(
        examples=["app-password"], default=None, description="Password; never logged."
    )
    security: Literal["starttls", "tls", "none"] = Field(
        examples=["tls"],
        default="starttls",
        description="starttls (port 587), tls (port 465) or none (local relay).",
    )
    timeout: float = Field(
        examples=[60.0], default=30.0, gt=0, description="Seconds per SMTP conversation."
    )
    sender: str = Field(description="From address.", examples=["Shop <orders@shop.example.com>"])
    to: str = Field(
        description="Recipient template: one address (with a display name or not).",
        examples=["{{ data.to }}"],
    )
    max_recipients: int = Field(
        examples=[5],
        default=1,
        ge=1,
        le=100,
        description="Addresses the recipient template may give (comma-separated); 1 refuses "
        "a list, so a value cannot add recipients.",
    )
    subject: str = Field(description="Subject template.", examples=["Your order {{ data.order }}"])
    body: str = Field(
        examples=["Hello {{ data.name }}, your order {{ data.order_id }} has shipped."],
        description="Body template (Jinja2, sandboxed).",
    )
    html: bool = Field(examples=[True], default=False, description="Send the body as text/html.")
