"""Hypothesis strategies for hostile input: bodies, headers, properties and sizes.

Strategies draw small *recipes* (a family and a few numbers); a recipe builds its
bytes once the case has its marker. Drawing stays cheap, so thousands of cases are
collected by one ``@given`` run (:func:`collect`) and then sent in bulk.

Each body states what a JSON reader held to esb/limits.py must do with it: ``apply``
(within every limit), ``reject`` (beyond one) or ``any`` (the boundary, or bytes
whose meaning depends on the content type).
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning

from esb.limits import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_ATTRIBUTE_BYTES,
    MAX_DEPTH,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
)
from esb.limits import SHORT_STRING_BYTES as SHORT
from tests.support.hostile import Expect
from tests.support.raw_amqp import RawText

T = TypeVar("T")


def collect(strategy: st.SearchStrategy[T], count: int, run_seed: int) -> list[T]:
    """``count`` examples of ``strategy``, drawn by one hypothesis run seeded ``run_seed``."""
    found: list[T] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(run_seed)
    @given(strategy)
    def gather(value: T) -> None:
        found.append(value)

    with warnings.catch_warnings():
        # Cases of megabytes are the point here; hypothesis warns when it would describe one.
        warnings.filterwarnings("ignore", "Generating overly large repr", HypothesisWarning)
        gather()
    return found


def worst(*expectations: Expect) -> Expect:
    """Reject if any part must be rejected, else any if any part may go either way."""
    if "reject" in expectations:
        return "reject"
    return "any" if "any" in expectations else "apply"


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=6)
#: What an AMQP header table can hold (pamqp encodes each of these).
field_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=20)
    | st.none()
    | st.binary(max_size=10).map(bytearray)
    | st.floats(allow_nan=False, width=32)
    | st.decimals(places=2, min_value=-(10**6), max_value=10**6)
    | st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2100, 1, 1))
)
field_values = st.recursive(
    field_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
#: Text that is not all ASCII: multi-byte characters make byte lengths differ from lengths.
wide_chars = st.sampled_from(["a", "é", "€", "😀", "\u200b", "\x7f"])


def _mutate(data: bytes, position: int, byte: int, how: str) -> bytes:
    at = position % (len(data) + 1)
    if how == "flip" and at < len(data):
        return data[:at] + bytes([byte]) + data[at + 1 :]
    if how == "cut":
        return data[:at]
    return data[:at] + bytes([byte]) + data[at:]


def mutated(encoded: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """``encoded`` bytes with one byte flipped or inserted, or the rest cut off."""
    return st.builds(
        _mutate,
        encoded,
        st.integers(0, 10_000),
        st.integers(0, 255),
        st.sampled_from(["flip", "cut", "insert"]),
    )


@dataclass(frozen=True)
class Body:
    label: str
    raw: bytes
    expect: Expect


@dataclass(frozen=True)
class BodyRecipe:
    """A JSON (or not) body: ``family`` and the numbers it is built from."""

    family: str
    size: int = 0
    variant: int = 0
    payload: Any = None

    def build(self, tag: str) -> Body:
        head = b'{"case":' + orjson.dumps(tag) + b","
        match self.family:
            case "valid":
                return Body("valid object", orjson.dumps({"case": tag, **self.payload}), "apply")
            case "bytes":
                return Body("arbitrary bytes", self.payload, "any")
            case "non_utf8":
                return Body(
                    "non-UTF-8 in a string", head + b'"name":"\xff' + self.payload + b'"}', "reject"
                )
            case "deep":
                return self._deep(head)
            case "duplicate":
                inner = b'{"d":1,"d":2}'
                nested = b'{"x":' * self.size + inner + b"}" * self.size
                return Body(
                    f"duplicate key at depth {self.size + 2}",
                    head + b'"n":' + nested + b"}",
                    "reject",
                )
            case "bigint":
                expect: Expect = "reject" if abs(self.payload) >= 2**64 else "any"
                return Body(
                    "integer beyond 64 bits",
                    head + b'"n":' + str(self.payload).encode() + b"}",
                    expect,
                )
            case "nonfinite":
                return Body(
                    f"{self.payload} literal",
                    head + b'"n":' + self.payload.encode() + b"}",
                    "reject",
                )
            case "huge":
                return self._huge(head)
            case "empty":
                return Body("empty body", b"", "any")
            case "scalar":
                return Body("JSON that is not an object", orjson.dumps(self.payload), "any")
        raise AssertionError(self.family)

    def _deep(self, head: bytes) -> Body:
        depth, shape = self.size, self.variant % 2
        opener, closer = (b'{"a":', b"}") if shape == 0 else (b"[", b"]")
        nested = opener * depth + b"1" + closer * depth
        expect: Expect = (
            "apply" if depth <= MAX_DEPTH - 14 else "reject" if depth > MAX_DEPTH + 6 else "any"
        )
        kind = "objects" if shape == 0 else "arrays"
        return Body(f"{kind} nested {_bucket(depth)} deep", head + b'"n":' + nested + b"}", expect)

    def _huge(self, head: bytes) -> Body:
        unit = b"x" if self.variant % 2 == 0 else b"ada@example.com 4111 1111 1111 1111 "
        blob = (unit * (self.size // len(unit) + 1))[: self.size]
        duplicate = self.variant >= 2
        body = head + (b'"d":1,' if duplicate else b"") + b'"blob":"' + blob + b'"'
        body += b',"d":2}' if duplicate else b"}"
        too_big = len(body) > DEFAULT_MAX_BODY_BYTES
        expect: Expect = "reject" if too_big or duplicate else "apply"
        what = "with a duplicate key" if duplicate else ("over the body limit" if too_big else "")
        return Body(f"a {_bucket(len(body))} byte body {what}".rstrip(), body, expect)


def _bucket(n: int) -> str:
    for bound in (16, 64, 256, 1024, 65_536, 1_048_576, 4_194_304):
        if n <= bound:
            return f"<={bound}"
    return ">4M"


def body_recipes(huge: bool = True) -> st.SearchStrategy[BodyRecipe]:
    families = [
        st.builds(BodyRecipe, st.just("valid"), payload=json_objects),
        st.builds(BodyRecipe, st.just("valid"), payload=json_objects),
        st.builds(BodyRecipe, st.just("valid"), payload=json_objects),
        st.builds(BodyRecipe, st.just("bytes"), payload=st.binary(max_size=300)),
        st.builds(BodyRecipe, st.just("non_utf8"), payload=st.binary(max_size=40)),
        st.builds(
            BodyRecipe, st.just("deep"), size=st.integers(1, 1100), variant=st.integers(0, 1)
        ),
        st.builds(BodyRecipe, st.just("deep"), size=st.integers(40, 90), variant=st.integers(0, 1)),
        st.builds(BodyRecipe, st.just("duplicate"), size=st.integers(0, 40)),
        st.builds(
            BodyRecipe,
            st.just("bigint"),
            payload=st.integers(2**63, 2**70)
            | st.integers(-(2**70), -(2**64))
            | st.integers(2**64, 10**400),
        ),
        st.builds(
            BodyRecipe,
            st.just("nonfinite"),
            payload=st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"]),
        ),
        st.builds(BodyRecipe, st.just("empty")),
        st.builds(BodyRecipe, st.just("scalar"), payload=json_values),
    ]
    if huge:
        # One case in about a hundred: large enough to matter, small enough to keep CI quick.
        sizes = st.sampled_from([40_000, 200_000, 900_000, 1_100_000, 2_500_000])
        families.append(
            st.integers(0, 99).flatmap(
                lambda n: (
                    st.builds(BodyRecipe, st.just("huge"), size=sizes, variant=st.integers(0, 3))
                    if n == 0
                    else st.builds(BodyRecipe, st.just("valid"), payload=json_objects)
                )
            )
        )
    return st.one_of(families)


# --- AMQP headers and properties -------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """AMQP headers and properties around a body, and what they alone call for."""

    label: str
    headers: dict[str, Any]
    properties: dict[str, Any]
    expect: Expect
    #: The body is replaced by a structured-mode event (content type cloudevents+json).
    structured: bool = False


@dataclass(frozen=True)
class EnvelopeRecipe:
    family: str
    size: int = 0
    variant: int = 0
    payload: Any = None

    def build(self, tag: str) -> Envelope:
        ce: dict[str, Any] = {
            "ce-specversion": "1.0",
            "ce-id": f"{tag}-id",
            "ce-source": "urn:hostile",
            "ce-type": "hostile.event",
        }
        props: dict[str, Any] = {"content_type": "application/json"}
        match self.family:
            case "plain":
                return Envelope("plain binary mode", ce, props, "apply")
            case "structured":
                casing = [
                    "application/cloudevents+json",
                    "Application/CloudEvents+JSON",
                    "APPLICATION/CLOUDEVENTS+JSON; charset=utf-8",
                ][self.variant % 3]
                return Envelope(
                    f"structured mode as {casing!r}", {}, {"content_type": casing}, "apply", True
                )
            case "long":
                return self._long(tag, ce, props)
            case "non_utf8":
                name = ["ce-id", "ce-source", "ce-type", "ce-subject", "ce-region"][
                    self.variant % 5
                ]
                raw = (
                    (ce.get(name, tag).encode() if name != "ce-subject" else b"s")
                    + b"\xff\xfe"
                    + self.payload
                )
                # As an AMQP long string (what other clients send) or a byte array.
                value = RawText(raw) if self.size % 2 == 0 else bytearray(raw)
                kind = type(value).__name__
                return Envelope(
                    f"non-UTF-8 bytes in {name} ({kind})", {**ce, name: value}, props, "reject"
                )
            case "utf8_bytes":
                return Envelope(
                    "a ce- header as UTF-8 bytes",
                    {**ce, "ce-subject": bytearray("ö".encode() * 3)},
                    props,
                    "apply",
                )
            case "extension":
                name, value = self.payload
                return Envelope(
                    f"extension of type {type(value).__name__}", {**ce, name: value}, props, "any"
                )
            case "many":
                headers = {**ce, **{f"x-junk-{i}": "v" for i in range(self.size)}}
                count = len(headers) + 1  # and x-hostile-case
                expect: Expect = (
                    "apply"
                    if count <= MAX_HEADERS - 4
                    else "reject"
                    if count > MAX_HEADERS
                    else "any"
                )
                return Envelope(f"{_bucket(count)} headers", headers, props, expect)
            case "big_header":
                headers = {**ce, "x-junk": "v" * self.size}
                expect = (
                    "apply"
                    if self.size <= MAX_HEADER_BYTES - 4_000
                    else "reject"
                    if self.size > MAX_HEADER_BYTES
                    else "any"
                )
                return Envelope(f"one header of {_bucket(self.size)} bytes", headers, props, expect)
            case "props_only":
                headers = {k: v for k, v in ce.items() if k not in ("ce-id", "ce-type")}
                props = {**props, "message_id": f"{tag}-mid", "type": "hostile.event"}
                return Envelope("id and type only as AMQP properties", headers, props, "apply")
            case "missing":
                name = ["ce-id", "ce-source", "ce-type"][self.variant % 3]
                headers = {k: v for k, v in ce.items() if k != name}
                return Envelope(f"no {name} and no property for it", headers, props, "reject")
            case "specversion":
                return Envelope(
                    "a wrong specversion", {**ce, "ce-specversion": self.payload}, props, "reject"
                )
            case "time":
                return Envelope("a hostile ce-time", {**ce, "ce-time": self.payload}, props, "any")
            case "content_type":
                return Envelope(
                    f"content type {self.payload!r}", ce, {"content_type": self.payload}, "any"
                )
            case "forged":
                name, value = self.payload
                return Envelope(f"forged {name}", {**ce, name: value}, props, "any")
        raise AssertionError(self.family)

    def _long(self, tag: str, ce: dict[str, Any], props: dict[str, Any]) -> Envelope:
        name = ["ce-id", "ce-type", "ce-correlationid", "ce-source", "ce-subject"][self.variant % 5]
        filler = self.payload * self.size
        value = f"{tag}-{filler}" if name in ("ce-id", "ce-correlationid") else f"hostile.{filler}"
        limit = SHORT if name in ("ce-id", "ce-type", "ce-correlationid") else MAX_ATTRIBUTE_BYTES
        size = len(value.encode())
        expect: Expect = "apply" if size <= limit else "reject"
        return Envelope(
            f"{name} of {_bucket(size)} bytes ({'over' if size > limit else 'within'} {limit})",
            {**ce, name: value},
            props,
            expect,
        )


hostile_text = st.text(max_size=60)
# pamqp sends a float as 32 bits, and RabbitMQ 3.10 closes the publisher's connection on a
# non-finite one in a header table: a broker limit, not esb's, so floats stay finite here.
extension_values = st.tuples(
    st.sampled_from(["ce-flag", "ce-count", "ce-Mixed_Case", "ce-a-very-long-extension-name-x"]),
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(width=32, allow_nan=False, allow_infinity=False)
    | hostile_text
    | st.just({"nested": "table"})
    | st.just(["a", 1])
    | st.just(dt.datetime(2026, 1, 1)),
)
forged_headers = st.tuples(
    st.sampled_from(
        [
            "x-esb-attempts",
            "x-esb-reason",
            "x-esb-slip",
            "x-esb-first-failed-at",
            "x-esb-original-queue",
            "x-esb-service",
        ]
    ),
    st.sampled_from(
        [
            "abc",
            -5,
            2**40,
            2**63 - 1,
            1.5,
            bytearray(b"\xff\xfe"),
            RawText(b"\xff\xfe"),
            "9" * 300,
            "",
            "forged",
        ]
    )
    | hostile_text,
)
content_types = st.sampled_from(
    [
        "Application/JSON",
        "application/json; charset=utf-8",
        "text/json",
        "application/vnd.x+json",
        "text/plain",
        "TEXT/PLAIN; charset=latin-1",
        "application/octet-stream",
        "",
        " ",
        "\x01bad",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "multipart/form-data",
    ]
) | st.text(max_size=40)


def envelope_recipes() -> st.SearchStrategy[EnvelopeRecipe]:
    return st.one_of(
        st.builds(EnvelopeRecipe, st.just("plain")),
        st.builds(EnvelopeRecipe, st.just("plain")),
        st.builds(EnvelopeRecipe, st.just("plain")),
        st.builds(EnvelopeRecipe, st.just("structured"), variant=st.integers(0, 2)),
        st.builds(
            EnvelopeRecipe,
            st.just("long"),
            size=st.integers(1, 1100),
            variant=st.integers(0, 4),
            payload=wide_chars,
        ),
        st.builds(
            EnvelopeRecipe,
            st.just("non_utf8"),
            size=st.integers(0, 1),
            variant=st.integers(0, 4),
            payload=st.binary(max_size=8),
        ),
        st.builds(EnvelopeRecipe, st.just("utf8_bytes")),
        st.builds(EnvelopeRecipe, st.just("extension"), payload=extension_values),
        st.builds(EnvelopeRecipe, st.just("many"), size=st.integers(1, 400)),
        st.builds(EnvelopeRecipe, st.just("big_header"), size=st.integers(1, 60_000)),
        st.builds(EnvelopeRecipe, st.just("props_only")),
        st.builds(EnvelopeRecipe, st.just("missing"), variant=st.integers(0, 2)),
        st.builds(
            EnvelopeRecipe,
            st.just("specversion"),
            payload=st.sampled_from(["0.3", "2.0", "", "1.0 "]),
        ),
        st.builds(
            EnvelopeRecipe, st.just("time"), payload=hostile_text | st.just("2026-13-45T99:99:99Z")
        ),
        st.builds(EnvelopeRecipe, st.just("content_type"), payload=content_types),
        st.builds(EnvelopeRecipe, st.just("forged"), payload=forged_headers),
    )


@dataclass(frozen=True)
class MessageRecipe:
    """A whole AMQP message: a body recipe inside an envelope recipe."""

    body: BodyRecipe
    envelope: EnvelopeRecipe

    def build(self, tag: str) -> tuple[str, Expect, bytes, dict[str, Any], dict[str, Any]]:
        body = self.body.build(tag)
        envelope = self.envelope.build(tag)
        raw = body.raw
        body_expect = body.expect
        if self.envelope.family == "content_type":
            body_expect = "any"  # the body means what the content type says, JSON or not
        if envelope.structured:
            data: Any = orjson.loads(raw) if body.expect == "apply" else {"case": tag}
            raw = orjson.dumps(
                {
                    "specversion": "1.0",
                    "id": f"{tag}-id",
                    "source": "urn:hostile",
                    "type": "hostile.event",
                    "data": data,
                }
            )
            body_expect = "apply"
        label = f"{envelope.label} / {body.label}"
        return (
            label,
            worst(body_expect, envelope.expect),
            raw,
            envelope.headers,
            envelope.properties,
        )


def message_recipes() -> st.SearchStrategy[MessageRecipe]:
    return st.builds(MessageRecipe, body_recipes(), envelope_recipes())


# --- routing slips ----------------------------------------------------------------------------

PWNED_STEP = {
    "kind": "map",
    "name": "pwn",
    "config": {"keep": True, "fields": {"pwned": {"const": True}}},
}


def forged_slips(genuine: str) -> st.SearchStrategy[tuple[str, Any, Expect]]:
    """Forged ``x-esb-slip`` values: (label, header value, expectation)."""
    real: dict[str, Any] = orjson.loads(genuine)

    def edited(**changes: Any) -> str:
        return orjson.dumps({**real, **changes}).decode()

    deep = '{"a":' * 1100 + "1" + "}" * 1100
    return st.sampled_from(
        [
            ("a slip that is not JSON", "not json", "reject"),
            ("a slip of non-UTF-8 bytes", RawText(b"\xff\xfe"), "reject"),
            (
                "a slip naming a route no file declares",
                edited(route="no-such-route", steps=[PWNED_STEP]),
                "reject",
            ),
            (
                "a slip naming an undeclared step kind",
                edited(route="no-such-route", steps=[{"kind": "evil", "name": "x", "config": {}}]),
                "reject",
            ),
            ("a real route with a forged step", edited(steps=[PWNED_STEP]), "any"),
            ("a real route sent to an undeclared sink", edited(to=["nowhere"]), "any"),
            ("a slip at position 0", edited(position=0), "any"),
            ("a slip at position -1", edited(position=-1), "any"),
            ("a slip at position 10**6", edited(position=10**6), "any"),
            ("a slip with a text position", edited(position="1"), "any"),
            ("a slip as an AMQP table", {"route": "hostile-all"}, "reject"),
            ("a slip of 40 kB", edited(pad="p" * 40_000), "reject"),
            ("a slip 1100 levels deep", deep, "reject"),
            ("a slip with duplicate keys", genuine[:-1] + ',"route":"no-such-route"}', "reject"),
            (
                "a slip with forged retries",
                edited(retry={"max_retries": 30, "initial_delay": 0.001}),
                "any",
            ),
        ]
    )


def never_pwned(line: dict[str, Any]) -> str | None:
    """A forged step never runs: its mark never reaches the sink."""
    data = line.get("data")
    if isinstance(data, dict) and "pwned" in data:
        return "a step from a forged slip ran (data.pwned reached the sink)"
    return None
