"""The route file format, as pydantic models: the single source of its reference docs.

A routes directory holds ``*.yaml`` files; each may declare ``sinks``, ``maps``,
``schemas``, ``routes`` and ``tests``. Names are global across the directory.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from esb.event_paths import EventRef, FieldPath
from esb.partitions import MAX_PARTITIONS, Partitioning
from esb.pools import POOL, RESERVED_POOLS
from esb.settings import RetrySettings

NAME = r"^[a-z0-9][a-z0-9._-]*$"


def _pool(value: str | None) -> str | None:
    if value in RESERVED_POOLS:
        raise ValueError(f"{value!r} is reserved (parking lots and delay queues end in it)")
    return value


_TOPIC_WORD = re.compile(r"^(\*|#|[^.*#]+)$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SinkDecl(Strict):
    """A sink instance routes may deliver to; run it with ``ESB_SERVICE__NAME=<name>``."""

    adapter: str | None = Field(
        default=None, description="Adapter that runs it, for graphs and the catalog."
    )
    description: str = Field(default="", description="What the target system is.")
    partitions: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PARTITIONS,
        description="Spread the sink's events over this many queues by partition_key, each "
        "with one active consumer: replicas share the partitions and each key stays in order "
        "(run the sink with consume.partitions set to the same number).",
        examples=[4],
    )
    partition_key: str | None = Field(
        default=None,
        description="What keeps events together and in order: subject, or a data path "
        "(data.order_id) of the event as this sink receives it.",
        examples=["data.order_id"],
    )

    @field_validator("partition_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            EventRef.parse(value)
        return value

    @model_validator(mode="after")
    def _both(self) -> SinkDecl:
        if (self.partitions is None) != (self.partition_key is None):
            raise ValueError("partitions and partition_key go together: give both or neither")
        return self

    def partitioning(self, name: str) -> Partitioning | None:
        """How this sink's events are spread, or None for a sink with one queue."""
        if self.partitions is None or self.partition_key is None:
            return None
        return Partitioning(name, self.partitions, EventRef.parse(self.partition_key))


class SourceDecl(Strict):
    """A source instance and the event types it publishes: for the catalog and graphs."""

    adapter: str | None = Field(default=None, description="Adapter that runs it.")
    description: str = Field(default="", description="What the source system is.")
    emits: list[str] = Field(default_factory=list, description="Event types it publishes.")


class FieldRule(Strict):
    """One output field: a CEL ``expr`` or a ``const``, with an optional ``default``."""

    expr: str | None = Field(
        default=None, description="CEL expression over the input event, e.g. data.customer.id."
    )
    const: Any = Field(default=None, description="A constant value.")
    default: Any = Field(
        default=None, description="Used when expr names a missing field or yields null."
    )

    @model_validator(mode="after")
    def _one_source(self) -> FieldRule:
        has_expr = self.expr is not None
        has_const = "const" in self.model_fields_set
        if has_expr == has_const:
            raise ValueError("give exactly one of expr or const")
        return self


class MapSpec(Strict):
    """A declarative mapping from the input ``data`` to a new ``data``."""

    keep: bool = Field(
        default=False, description="Start from a copy of the input data instead of {}."
    )
    fields: dict[str, FieldRule | str] = Field(
        default_factory=dict,
        description="Output field (dotted path nests) to a rule; a plain string is a CEL expr.",
    )
    drop: list[str] = Field(
        default_factory=list, description="Dotted paths removed from the output."
    )


class DateConversion(Strict):
    from_: str = Field(alias="from", description="strptime format of the input, or iso.")
    to: str = Field(default="iso", description="strftime format of the output, or iso.")


class DateTimeConversion(Strict):
    from_: str = Field(
        default="iso", alias="from", description="strptime format of the input, or iso."
    )
    to: str = Field(default="iso", description="strftime format of the output, or iso.")
    assume_timezone: str = Field(default="UTC", description="Zone of inputs without an offset.")
    to_timezone: str | None = Field(
        default=None, description="IANA zone to convert to, e.g. Europe/Berlin."
    )


class DecimalConversion(Strict):
    places: int = Field(default=2, ge=0, le=18, description="Decimal places, rounded half-even.")
    as_: Literal["string", "number"] = Field(
        default="string",
        alias="as",
        description="Money travels as a string by default (no float error).",
    )


class UnitConversion(Strict):
    from_: str = Field(alias="from", description="Unit of the input, e.g. g, lb, cm, ml.")
    to: str = Field(description="Unit of the output, of the same dimension.")
    places: int | None = Field(default=None, ge=0, le=18, description="Round to this many places.")


class Conversion(Strict):
    """One field's conversion; give ``field`` and exactly one kind."""

    field: FieldPath = Field(description="Dotted path in data.")
    date: DateConversion | None = None
    datetime: DateTimeConversion | None = None
    decimal: DecimalConversion | None = None
    number: Literal["int", "float"] | None = None
    unit: UnitConversion | None = None
    optional: bool = Field(
        default=False, description="Skip, instead of failing, when the field is missing."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Conversion:
        kinds = [
            k
            for k in ("date", "datetime", "decimal", "number", "unit")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError("give exactly one of date, datetime, decimal, number, unit")
        return self


#: The keys that name a step's kind, as written in route files.
STEP_KINDS = ("map", "convert", "validate", "transform")


class Step(Strict):
    """One step of a route; give exactly one kind."""

    map: str | MapSpec | None = Field(
        default=None, description="A map name from maps:, or an inline map."
    )
    convert: list[Conversion] | None = Field(
        default=None, description="Field conversions, in order."
    )
    validate_: str | None = Field(
        default=None,
        alias="validate",
        description="A schema name from schemas:, or an esb.schemas pydantic model.",
    )
    transform: str | None = Field(
        default=None, description="A custom transformer of the esb.transformers entry points."
    )
    runs_in: str | None = Field(
        default=None,
        pattern=POOL,
        description="Where this step runs, instead of the route's runs_in: router, transformer, "
        "or the name of a transformer pool (esb run transformer NAME).",
    )

    _runs_in = field_validator("runs_in")(_pool)

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = [
            k for k in STEP_KINDS if getattr(self, f"{k}_" if k == "validate" else k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of {', '.join(STEP_KINDS)}")
        return self


class Route(Strict):
    """One integration: which events, under what condition, reshaped how, delivered where."""

    name: str = Field(pattern=NAME, description="Unique in the routes directory.")
    from_: str = Field(
        alias="from", description="AMQP topic pattern on the event type (* one word, # any)."
    )
    when: str | None = Field(
        default=None, description="CEL condition over the attributes and data."
    )
    steps: list[Step] = Field(default_factory=list, description="Transformers, in order.")
    runs_in: str = Field(
        default="transformer",
        pattern=POOL,
        description="Where the steps run: transformer (the shared pool, one hop for all "
        "steps), router (no hop of their own: map, convert, validate and custom steps marked "
        "router-safe), or the name of a dedicated transformer pool.",
    )
    to: list[str] = Field(description="Sink name, or a list of them for fan-out.")
    retry: RetrySettings | None = Field(
        default=None,
        description="Retry policy for this route's messages in its transformers and sinks, "
        "instead of theirs; delays stay within each consumer's own max_delay.",
    )

    _runs_in = field_validator("runs_in")(_pool)

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one sink")
        return value

    @field_validator("from_")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not all(_TOPIC_WORD.match(word) for word in value.split(".")):
            raise ValueError(f"{value!r} is not a topic pattern (dot-separated words, * or #)")
        return value


class Expectation(Strict):
    """What one sink should receive in a route test, or the error a step should raise."""

    route: str = Field(description="The route that delivers it.")
    to: str | None = Field(default=None, description="The sink; required unless error is given.")
    data: Any = Field(
        default=None, description="The exact data the sink receives; unchecked when absent."
    )
    error: str | None = Field(
        default=None,
        description="Instead of a delivery, a step fails with an error containing this text "
        "(the transformer parks the message).",
    )

    @model_validator(mode="after")
    def _sink_or_error(self) -> Expectation:
        if (self.to is None) == (self.error is None):
            raise ValueError("give to (a delivery) or error (a step failure), not both")
        return self


class RouteTest(Strict):
    """A route test case: an event in, the deliveries expected out (none means unrouted)."""

    name: str = Field(description="Shown in the test report.")
    event: dict[str, Any] = Field(
        description="A structured-mode CloudEvent (id, specversion and source may be left out)."
    )
    expect: list[Expectation] = Field(
        default_factory=list, description="Every delivery, in any order."
    )


class RouteFile(Strict):
    """One ``routes/*.yaml`` file."""

    sources: dict[str, SourceDecl] = Field(
        default_factory=dict, description="Source instances by name."
    )
    sinks: dict[str, SinkDecl] = Field(default_factory=dict, description="Sink instances by name.")
    maps: dict[str, MapSpec] = Field(default_factory=dict, description="Named mappings.")
    schemas: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Named JSON Schemas (draft 2020-12), inline."
    )
    routes: list[Route] = Field(default_factory=list, description="The routes.")
    tests: list[RouteTest] = Field(default_factory=list, description="Route tests as data.")
