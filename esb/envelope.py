"""The canonical message: a CloudEvents 1.0 event, validated by pydantic.

Every message on the bus is a :class:`CloudEvent`. Invalid input never gets
past :func:`parse_structured` or :meth:`CloudEvent.validated`: the error names
the attribute and the reason (see :class:`esb.errors.EnvelopeError`).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from esb.errors import EnvelopeError

SPECVERSION = "1.0"

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")

ExtensionValue = str | int | bool

#: Attributes defined by the CloudEvents spec or given a field of their own here.
KNOWN_ATTRIBUTES = frozenset(
    {
        "id",
        "source",
        "specversion",
        "type",
        "datacontenttype",
        "dataschema",
        "subject",
        "time",
        "data",
        "data_base64",
        "correlationid",
        "causationid",
        "traceparent",
    }
)


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event.

    ``correlationid``, ``causationid`` and ``traceparent`` are the extensions
    esb itself uses; any other extension goes in ``extensions``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, description="Unique per source; sinks de-duplicate on it.")
    source: str = Field(min_length=1, description="URI-reference of the system that emitted it.")
    type: str = Field(min_length=1, description="Event type, also the AMQP routing key.")
    specversion: Literal["1.0"] = "1.0"
    time: datetime | None = None
    subject: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: Any = None
    correlationid: str | None = None
    causationid: str | None = None
    traceparent: str | None = None
    extensions: dict[str, ExtensionValue] = Field(default_factory=dict)

    @field_validator("time", mode="before")
    @classmethod
    def _rfc3339(cls, value: object) -> object:
        if isinstance(value, str) and not _RFC3339.match(value):
            raise ValueError("not an RFC 3339 timestamp")
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("must carry a time zone offset")
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("must be an RFC 3339 string")
        return value

    @field_validator("extensions")
    @classmethod
    def _extension_names(cls, value: dict[str, ExtensionValue]) -> dict[str, ExtensionValue]:
        for name in value:
            if not _EXTENSION_NAME.match(name):
                raise ValueError(
                    f"extension name {name!r} must be 1-20 lowercase letters or digits"
                )
            if name in KNOWN_ATTRIBUTES:
                raise ValueError(f"extension name {name!r} is a reserved attribute")
        return value

    @classmethod
    def new(cls, type: str, source: str, data: Any = None, **attributes: Any) -> CloudEvent:
        """Build an event with a fresh id and the current time."""
        attributes.setdefault("id", str(uuid.uuid4()))
        attributes.setdefault("time", datetime.now(UTC))
        return cls.validated(type=type, source=source, data=data, **attributes)

    @classmethod
    def validated(cls, **attributes: Any) -> CloudEvent:
        """Validate attributes into an event, raising :class:`EnvelopeError` on the first fault."""
        try:
            return cls.model_validate(attributes)
        except ValidationError as exc:
            raise envelope_error(exc) from None

    def attributes(self) -> dict[str, Any]:
        """Context attributes as CloudEvents names (extensions flattened), without ``data``."""
        attrs: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        for name in ("subject", "datacontenttype", "dataschema"):
            value = getattr(self, name)
            if value is not None:
                attrs[name] = value
        if self.time is not None:
            attrs["time"] = format_time(self.time)
        for name in ("correlationid", "causationid", "traceparent"):
            value = getattr(self, name)
            if value is not None:
                attrs[name] = value
        attrs.update(self.extensions)
        return attrs

    def to_structured(self) -> bytes:
        """Serialise in structured JSON mode (``application/cloudevents+json``)."""
        doc = self.attributes()
        if isinstance(self.data, bytes):
            doc["data_base64"] = base64.b64encode(self.data).decode("ascii")
        elif self.data is not None:
            doc["data"] = self.data
        return orjson.dumps(doc)


def format_time(value: datetime) -> str:
    """RFC 3339 with ``Z`` for UTC, the form most CloudEvents tools emit."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def split_attributes(doc: dict[str, Any]) -> dict[str, Any]:
    """Turn a flat CloudEvents attribute map into :class:`CloudEvent` keyword arguments."""
    fields: dict[str, Any] = {}
    extensions: dict[str, Any] = {}
    for name, value in doc.items():
        if name in KNOWN_ATTRIBUTES:
            fields[name] = value
        else:
            extensions[name] = value
    if extensions:
        fields["extensions"] = extensions
    return fields


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise _DuplicateKey(key)
        doc[key] = value
    return doc


class _DuplicateKey(ValueError):
    pass


_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)
#: Every object key in the text is a string followed by a colon; a string value can match too,
#: so more matches than parsed keys means "maybe a duplicate": only then parse a second time.
_KEY_LIKE = re.compile(rb'"\s*:')


def _maybe_duplicate_keys(body: bytes, keys: int) -> bool:
    """Whether the text could hold more object keys than ``keys`` (the parsed ones).

    Each key in the text is followed by a colon, so as many colons as parsed
    keys rules duplicates out at C speed; colons in string values (times,
    URLs) leave it to the key-like pattern, and to a second parse only then.
    """
    return body.count(b":") > keys and len(_KEY_LIKE.findall(body)) > keys


def _count_keys(value: Any) -> int:
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def loads_json(body: bytes, field: str) -> Any:
    """Parse JSON strictly: UTF-8, no NaN or Infinity, numbers that fit a double, nesting up to
    1,024 levels (orjson's limits), and no duplicate object keys, which parsers resolve
    differently (a duplicate could smuggle a value past a check); the error names ``field``."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        code = "invalid_encoding" if "UTF-8" in str(exc) else "invalid_json"
        raise EnvelopeError(field, f"not valid JSON: {exc}", code) from None
    if isinstance(value, dict | list) and _maybe_duplicate_keys(body, _count_keys(value)):
        try:
            _STRICT_DECODER.decode(body.decode())
        except _DuplicateKey as exc:
            raise EnvelopeError(
                field, f"duplicate key {exc.args[0]!r} in a JSON object", "duplicate_key"
            ) from None
    return value


def parse_structured(body: bytes, max_bytes: int | None = None) -> CloudEvent:
    """Parse a structured-mode JSON event (``application/cloudevents+json``)."""
    check_size(body, max_bytes)
    doc = loads_json(body, "body")
    if not isinstance(doc, dict):
        raise EnvelopeError("body", "a structured event must be a JSON object", "invalid_json")
    return event_from_dict(doc)


def event_from_dict(doc: dict[str, Any]) -> CloudEvent:
    """Validate a structured-mode attribute map (``data`` or ``data_base64``) into an event."""
    fields = split_attributes(doc)
    if "data_base64" in fields:
        encoded = fields.pop("data_base64")
        if "data" in fields:
            raise EnvelopeError("data_base64", "data and data_base64 are mutually exclusive")
        try:
            fields["data"] = base64.b64decode(encoded, validate=True)
        except (ValueError, TypeError):
            raise EnvelopeError("data_base64", "not valid base64") from None
    return CloudEvent.validated(**fields)


def check_size(body: bytes, max_bytes: int | None) -> None:
    """Refuse a body over the configured limit before spending time parsing it."""
    if max_bytes is not None and len(body) > max_bytes:
        raise EnvelopeError(
            "body", f"{len(body)} bytes exceeds the limit of {max_bytes} bytes", "too_large"
        )


def envelope_error(exc: ValidationError) -> EnvelopeError:
    """Name the first faulty attribute of a pydantic error, in CloudEvents terms."""
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in first["loc"]) or "event"
    if first["type"] == "missing":
        return EnvelopeError(loc, "required attribute is missing", "missing_attribute")
    if loc == "specversion":
        return EnvelopeError(loc, f"must be {SPECVERSION!r}", "wrong_specversion")
    message = first["msg"].removeprefix("Value error, ")
    return EnvelopeError(loc, message, "invalid_attribute")
