"""Settings of the REST sink."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from esb import AdapterSettings, Template

#: The attributes a URL placeholder may name, beside ``{data}`` and ``{data.<path>}``.
URL_ATTRIBUTES = ("id", "type", "source", "subject")


class _Auth(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BearerAuth(_Auth):
    kind: Literal["bearer"]
    token: SecretStr = Field(description="Sent as Authorization: Bearer <token>.")


class BasicAuth(_Auth):
    kind: Literal["basic"]
    username: str
    password: SecretStr


class ApiKeyAuth(_Auth):
    kind: Literal["api_key"]
    header: str = Field(default="X-API-Key", description="Header carrying the key.")
    key: SecretStr


class OAuth2ClientCredentials(_Auth):
    kind: Literal["oauth2"]
    token_url: str = Field(description="Token endpoint (client credentials grant).")
    client_id: str
    client_secret: SecretStr
    scope: str | None = None


Auth = Annotated[
    BearerAuth | BasicAuth | ApiKeyAuth | OAuth2ClientCredentials, Field(discriminator="kind")
]


class HttpSinkSettings(AdapterSettings):
    """Send each event to a REST API."""

    url: str = Field(
        description="URL template: {id}, {type}, {source}, {subject}, {data} and {data.path} "
        "are filled from the event and URL-quoted; an event without one is parked.",
        examples=["https://shipping.example.com/api/shipments/{data.reference}"],
    )
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = Field(
        examples=["PUT"], default="POST", description="HTTP method of each request."
    )
    body: Literal["data", "event", "none"] = Field(
        examples=["event"],
        default="data",
        description="Send the event's data as JSON, the whole CloudEvent, or nothing.",
    )
    headers: dict[str, str] = Field(
        examples=[{"X-Tenant": "shop"}], default_factory=dict, description="Extra request headers."
    )
    auth: Auth | None = Field(
        examples=[{"kind": "bearer", "token": "s3cr3t"}],
        default=None,
        description="bearer, basic, api_key or oauth2.",
    )
    idempotency_header: str | None = Field(
        examples=["X-Request-Id"],
        default="Idempotency-Key",
        description="Header carrying the event id, so the target can de-duplicate; none to omit.",
    )
    timeout: float = Field(
        examples=[30.0], default=10.0, gt=0, description="Seconds for the whole request."
    )
    concurrency: int = Field(
        examples=[4], default=8, ge=1, description="Requests in flight to the target."
    )
    rate_limit: float | None = Field(
        examples=[10.0],
        default=None,
        gt=0,
        description="Requests per second at most (partner API quotas).",
    )

    @field_validator("url")
    @classmethod
    def _origin_is_fixed(cls, value: str) -> str:
        """The event fills the path and query only: it never chooses where credentials go."""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        if "{" in parts.netloc:
            raise ValueError("placeholders may fill the path or the query, not the host")
        Template.compile(value, "url", attributes=URL_ATTRIBUTES, whole_roots=True)
        return value
