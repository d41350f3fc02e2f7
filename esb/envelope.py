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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from esb.errors import EnvelopeError
from esb.limits import (
    MAX_ATTRIBUTE_BYTES,
    MAX_ATTRIBUTES_BYTES,
    MAX_DEPTH,
    MAX_EXTENSIONS,
    SHORT_STRING_BYTES,
)

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

    @field_validator("id", "type", "correlationid", "datacontenttype")
    @classmethod
    def _short_string(cls, value: str | None) -> str | None:
        """These travel in AMQP short strings (message_id, type, ...): 255 bytes at most."""
        if value is not None and len(value) * 4 > SHORT_STRING_BYTES:
            _check_bytes(value, SHORT_STRING_BYTES)
        return value

    @field_validator("source", "subject", "dataschema", "causationid", "traceparent")
    @classmethod
    def _attribute_size(cls, value: str | None) -> str | None:
        if value is not None and len(value) * 4 > MAX_ATTRIBUTE_BYTES:
            _check_bytes(value, MAX_ATTRIBUTE_BYTES)
        return value

    @field_validator("extensions")
    @classmethod
    def _extension_names(cls, value: dict[str, ExtensionValue]) -> dict[str, ExtensionValue]:
        if len(value) > MAX_EXTENSIONS:
            raise ValueError(f"{len(value)} extensions, more than the limit of {MAX_EXTENSIONS}")
        for name, item in value.items():
            if not _EXTENSION_NAME.match(name):
                raise ValueError(
                    f"extension name {name!r} must be 1-20 lowercase letters or digits"
                )
            if name in KNOWN_ATTRIBUTES:
                raise ValueError(f"extension name {name!r} is a reserved attribute")
            if isinstance(item, str) and len(item) * 4 > MAX_ATTRIBUTE_BYTES:
                _check_bytes(item, MAX_ATTRIBUTE_BYTES, name)
        return value

    @model_validator(mode="after")
    def _attributes_fit_headers(self) -> CloudEvent:
        """All attributes together within MAX_ATTRIBUTES_BYTES: they travel as headers."""
        texts = [
            self.id,
            self.source,
            self.type,
            self.subject,
            self.datacontenttype,
            self.dataschema,
            self.correlationid,
            self.causationid,
            self.traceparent,
            *self.extensions,
            *(v for v in self.extensions.values() if isinstance(v, str)),
        ]
        chars = sum(len(text) for text in texts if text is not None)
        if chars * 4 > MAX_ATTRIBUTES_BYTES:
            size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts if t is not None)
            if size > MAX_ATTRIBUTES_BYTES:
                raise ValueError(
                    f"attributes of {size} bytes together, more than the limit of "
                    f"{MAX_ATTRIBUTES_BYTES} bytes"
                )
        return self

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


def _check_bytes(value: str, limit: int, name: str = "") -> None:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        prefix = f"{name}: " if name else ""
        raise ValueError(f"{prefix}{size} bytes, more than the limit of {limit} bytes")


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


class _LongInteger(ValueError):
    pass


_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_HUGE = float(2**63)


def _checked_int(text: str) -> int:
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise _LongInteger(text)
    return value


_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_int=_checked_int)
#: Every object key in the text is a string followed by a colon; a string value can match too,
#: so more matches than parsed keys means "maybe a duplicate": only then parse a second time.
_KEY_LIKE = re.compile(rb'"\s*:')
#: A quote followed by white space: only then can a key-like match be other than ``":``.
_QUOTE_SPACE = re.compile(rb'"[ \t\r\n]')


def _key_like(body: bytes) -> int:
    """How many times a quote is followed by a colon, white space allowed between: at C speed
    (a count) when no quote is followed by white space, as in compact JSON."""
    if _QUOTE_SPACE.search(body) is None:
        return body.count(b'":')
    return len(_KEY_LIKE.findall(body))


def _maybe_duplicate_keys(body: bytes, keys: int) -> bool:
    """Whether the text could hold more object keys than ``keys`` (the parsed ones).

    Each key in the text is followed by a colon, so as many colons as parsed
    keys rules duplicates out at C speed; colons in string values (times,
    URLs) leave it to the key-like count, and to a second parse only then.
    """
    return body.count(b":") > keys and _key_like(body) > keys


def _shape(value: Any, field: str, deep: bool) -> tuple[int, bool]:
    """The number of object keys in ``value``, and whether it holds a float of 64-bit integer
    size or more (it may have been an integer too long to keep: orjson makes those floats).

    One walk, level by level. ``deep``: the text has brackets enough to nest deeper than
    :data:`esb.limits.MAX_DEPTH` (else the depth needs no check); EnvelopeError if it does.
    """
    keys = 0
    huge = False
    level = [value]
    depth = 0
    while level:
        depth += 1
        if deep and depth > MAX_DEPTH:
            raise EnvelopeError(
                field, f"nested deeper than the limit of {MAX_DEPTH} levels", "too_deep"
            )
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is dict:
                keys += len(item)
                children = item.values()
            elif kind is list:
                children = item
            else:
                huge = huge or (kind is float and abs(item) >= _HUGE)
                continue
            for child in children:
                kind = type(child)
                if kind is dict or kind is list:
                    below.append(child)
                elif kind is float and abs(child) >= _HUGE:
                    huge = True
        level = below
    return keys, huge


def loads_json(body: bytes, field: str) -> Any:
    """Parse JSON strictly; the error names ``field``.

    Refused: text that is not UTF-8, NaN and Infinity, nesting deeper than
    :data:`esb.limits.MAX_DEPTH`, integers beyond 64 bits (orjson would make
    them floats, dropping digits), and duplicate object keys, which parsers
    resolve differently (a duplicate could smuggle a value past a check).
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise EnvelopeError(
                field, f"nested deeper than the limit of {MAX_DEPTH} levels", "too_deep"
            ) from None
        code = "invalid_encoding" if "UTF-8" in str(exc) else "invalid_json"
        raise EnvelopeError(field, f"not valid JSON: {_short(str(exc))}", code) from None
    deep = body.count(b"{") + body.count(b"[") > MAX_DEPTH
    keys, huge = _shape(value, field, deep)
    if huge or (keys and _maybe_duplicate_keys(body, keys)):
        _strict_parse(body, field)
    return value


def _strict_parse(body: bytes, field: str) -> None:
    """Parse again with Python's decoder, which sees duplicate keys and every digit of a number.

    Only reached for text within the depth limit, so its recursion is bounded.
    """
    try:
        _STRICT_DECODER.decode(body.decode())
    except _DuplicateKey as exc:
        raise EnvelopeError(
            field, f"duplicate key {_short(exc.args[0])!r} in a JSON object", "duplicate_key"
        ) from None
    except _LongInteger as exc:
        raise EnvelopeError(
            field,
            f"integer {_short(exc.args[0])} does not fit 64 bits (send it as a string)",
            "number_out_of_range",
        ) from None
    except ValueError as exc:  # Python's own limit on digits in an integer
        raise EnvelopeError(
            field, f"not a usable number: {_short(str(exc))}", "number_out_of_range"
        ) from None


def _short(text: str, limit: int = 80) -> str:
    """Attacker-chosen text quoted in an error is cut: errors are logged and stored in headers."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def parse_structured(body: bytes, max_bytes: int | None = None) -> CloudEvent:
    """Parse a structured-mode JSON event (``application/cloudevents+json``)."""
    check_size(len(body), max_bytes)
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


def check_size(size: int, max_bytes: int | None) -> None:
    """Refuse a body of ``size`` bytes over the configured limit before spending time on it."""
    if max_bytes is not None and size > max_bytes:
        raise EnvelopeError(
            "body", f"{size} bytes exceeds the limit of {max_bytes} bytes", "too_large"
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
