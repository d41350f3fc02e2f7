"""Settings of the e-mail sink."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from esb import AdapterSettings


class EmailSinkSettings(AdapterSettings):
    """Send each event as an e-mail through an SMTP server, from templates."""

    host: str = Field(description="SMTP server.", examples=["smtp.example.com"])
    port: int = Field(default=587, ge=1, le=65535, description="SMTP port.")
    username: str | None = Field(default=None, description="Login, when the server needs one.")
    password: SecretStr | None = Field(default=None, description="Password; never logged.")
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls (port 587), tls (port 465) or none (local relay)."
    )
    timeout: float = Field(default=30.0, gt=0, description="Seconds per SMTP conversation.")
    sender: str = Field(description="From address.", examples=["Shop <orders@shop.example.com>"])
    to: str = Field(
        description="Recipient template: one address (with a display name or not).",
        examples=["{{ data.to }}"],
    )
    max_recipients: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Addresses the recipient template may give (comma-separated); 1 refuses "
        "a list, so a value cannot add recipients.",
    )
    subject: str = Field(description="Subject template.", examples=["Your order {{ data.order }}"])
    body: str = Field(description="Body template (Jinja2, sandboxed).")
    html: bool = Field(default=False, description="Send the body as text/html.")
