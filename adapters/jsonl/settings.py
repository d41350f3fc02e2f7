"""Settings of the JSON-lines adapter."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from esb import DEFAULT_MAX_BODY_BYTES, AdapterSettings


class JsonLinesSourceSettings(AdapterSettings):
    """Read one event per line from a file or standard input."""

    path: Path | None = Field(
        default=None,
        description="File to read; standard input when unset.",
        examples=["/data/orders.jsonl"],
    )
    event_type: str | None = Field(
        default=None,
        description="Type for lines that are plain data, not CloudEvents.",
        examples=["shop.order.created"],
    )
    event_source: str = Field(
        examples=["urn:legacy-erp"],
        default="urn:esb:jsonl",
        description="Source attribute for plain data lines.",
    )
    id_field: str | None = Field(
        default=None,
        description="Field of a plain data line to use as the event id "
        "(so re-reading the file repeats ids and sinks de-duplicate); a new UUID when unset.",
        examples=["order_id"],
    )
    window: int = Field(
        examples=[64], default=256, ge=1, description="Events in flight awaiting confirm."
    )
    max_line_bytes: int = Field(
        examples=[65_536],
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1,
        description="A longer line is refused, read past without being held in memory.",
    )


class JsonLinesSinkSettings(AdapterSettings):
    """Append each event as one structured-mode JSON line to a file."""

    path: Path = Field(description="File to append to.", examples=["/data/out.jsonl"])
    fsync: bool = Field(
        examples=[True],
        default=False,
        description="fsync after every line: survives power loss, at a cost.",
    )
