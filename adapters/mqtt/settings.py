"""Settings of the MQTT source and sink: how to reach the broker, then each side's own."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.mqtt.topics import check_filter, check_type_template, topic_template
from esb import DEFAULT_MAX_BODY_BYTES, AdapterSettings


class MqttSettings(AdapterSettings):
    """The connection to an MQTT broker, shared by the source and the sink."""

    host: str = Field(description="MQTT broker.", examples=["mqtt.warehouse.example.com"])
    port: int = Field(
        examples=[8883], default=1883, ge=1, le=65535, description="Broker port; 8883 with TLS."
    )
    protocol: Literal["5", "3.1.1"] = Field(
        examples=["3.1.1"], default="5", description="MQTT version: 5 or 3.1.1."
    )
    username: str | None = Field(
        examples=["esb"], default=None, description="Login, when the broker needs one."
    )
    password: SecretStr | None = Field(
        examples=["mqtt-secret"], default=None, description="Password; never logged."
    )
    tls: bool = Field(
        examples=[True], default=False, description="Connect over TLS, verifying the broker."
    )
    tls_ca_file: Path | None = Field(
        examples=["/etc/esb/mqtt/ca.pem"],
        default=None,
        description="CA bundle to verify the broker; the system's when unset.",
    )
    tls_cert_file: Path | None = Field(
        examples=["/etc/esb/mqtt/client.pem"],
        default=None,
        description="Client certificate (mutual TLS).",
    )
    tls_key_file: Path | None = Field(
        examples=["/etc/esb/mqtt/client.key"], default=None, description="Client key (mutual TLS)."
    )
    keepalive: int = Field(
        examples=[30],
        default=60,
        ge=5,
        le=65535,
        description="Seconds between pings on an idle connection.",
    )
    timeout: float = Field(
        examples=[5.0],
        default=10.0,
        gt=0,
        description="Seconds per connection attempt and, in the sink, per publish.",
    )
    reconnect_max_seconds: int = Field(
        examples=[60],
        default=30,
        ge=1,
        description="Longest wait between reconnection attempts (doubling from 1).",
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: object) -> object:
        """YAML reads ``protocol: 5`` as a number."""
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username (ESB_ADAPTER__USERNAME)")
        files = ("tls_ca_file", "tls_cert_file", "tls_key_file")
        given = [name for name in files if getattr(self, name) is not None]
        if given and not self.tls:
            raise ValueError(f"{', '.join(given)} set but tls is false (ESB_ADAPTER__TLS=true)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self


class MqttSourceSettings(MqttSettings):
    """Subscribe to topic filters and publish each message as an event."""

    client_id: str = Field(
        min_length=1,
        description="Client id of the persistent session; one running source per id.",
        examples=["esb-warehouse-scanners"],
    )
    topics: list[str] = Field(
        min_length=1,
        description="Topic filters to subscribe to (QoS 1); + and # are wildcards.",
        examples=[["warehouse/+/scanner/#"]],
    )
    session_expiry_seconds: int = Field(
        examples=[86_400],
        default=604_800,
        ge=0,
        le=4_294_967_295,
        description="MQTT 5: how long the broker keeps the session (and queues messages) while "
        "the source is away.",
    )
    event_type: str = Field(
        description="Event type; {topic} is the topic with / turned into ., {1}, {2}, ... its "
        "levels.",
        examples=["warehouse.scan", "shopfloor.{3}.reading", "mqtt.{topic}"],
    )
    event_source: str = Field(
        examples=["urn:warehouse"], default="urn:esb:mqtt", description="Source attribute."
    )
    id_field: str | None = Field(
        default=None,
        description="Field of a JSON object payload holding the message's id, used as the event "
        "id so a redelivered message repeats it; a new UUID when unset or absent.",
        examples=["reading_id"],
    )
    non_json: Literal["reject", "wrap"] = Field(
        examples=["wrap"],
        default="reject",
        description="A payload that is not JSON: reject (log, count, acknowledge) or wrap as "
        '{"raw": text} ({"raw_base64": ...} when not UTF-8).',
    )
    window: int = Field(
        examples=[64],
        default=256,
        ge=1,
        le=65_535,
        description="Messages in flight awaiting the bus's confirm (MQTT 5: Receive Maximum).",
    )
    max_payload_bytes: int = Field(
        examples=[65_536],
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1,
        description="A larger payload is refused (acknowledged and counted) before it is parsed.",
    )

    @field_validator("topics")
    @classmethod
    def _filters(cls, value: list[str]) -> list[str]:
        for topic_filter in value:
            check_filter(topic_filter)
        return value

    @field_validator("event_type")
    @classmethod
    def _type_template(cls, value: str) -> str:
        check_type_template(value)
        return value


class MqttSinkSettings(MqttSettings):
    """Publish each event's data as JSON to a topic built from the event."""

    client_id: str | None = Field(
        examples=["esb-dock-displays"],
        default=None,
        description="Client id; the broker picks one when unset (clean session).",
    )
    topic: str = Field(
        description="Topic template: {id}, {type}, {source}, {subject} and {data.path} are "
        "filled from the event.",
        examples=["warehouse/{data.site}/pick", "esb/{type}/{subject}"],
    )
    qos: int = Field(
        examples=[0],
        default=1,
        ge=0,
        le=2,
        description="0, 1 (wait for PUBACK) or 2 (wait for PUBCOMP).",
    )
    retain: bool = Field(
        examples=[True], default=False, description="Ask the broker to retain the last message."
    )

    @field_validator("topic")
    @classmethod
    def _topic_template(cls, value: str) -> str:
        topic_template(value)
        return value
