"""Settings of the dropped-files source."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from esb import AdapterSettings, FieldPath


class FileSourceSettings(AdapterSettings):
    """Read CSV or JSON-lines files dropped in a directory, the legacy file exchange."""

    directory: Path = Field(
        examples=["/exchange/erp"], description="Directory the files are dropped in."
    )
    pattern: str = Field(
        examples=["orders-*.csv"], default="*.csv", description="Files to take, as a glob."
    )
    format: Literal["csv", "jsonl"] = Field(
        examples=["jsonl"], default="csv", description="csv or jsonl."
    )
    delimiter: str = Field(
        examples=[";"], default=",", min_length=1, max_length=1, description="CSV delimiter."
    )
    encoding: str = Field(
        examples=["cp1252"], default="utf-8", description="Text encoding of the files."
    )
    done_dir: Path | None = Field(
        examples=["/exchange/erp/archive"],
        default=None,
        description="Where a file goes once all its events are confirmed; "
        "default <directory>/done.",
    )
    error_dir: Path | None = Field(
        examples=["/exchange/erp/rejected"],
        default=None,
        description="Where a file with a bad row goes, with a .reason.txt beside "
        "it; default <directory>/error.",
    )
    event_type: str = Field(description="Type of the events.", examples=["erp.order.imported"])
    event_source: str = Field(
        examples=["urn:erp"], default="urn:esb:files", description="Source attribute."
    )
    id_field: str | None = Field(
        examples=["order"],
        default=None,
        description="Field holding a row's id; default <file name>:<line>, so a file read "
        "again after a crash repeats its ids.",
    )
    settle_seconds: float = Field(
        examples=[10.0],
        default=2.0,
        ge=0,
        description="A file younger than this may still be written: wait.",
    )
    max_file_bytes: int = Field(
        examples=[16_777_216],
        default=64 * 1024 * 1024,
        ge=1,
        description="A larger file is refused unread (a file is read whole, so this bounds "
        "the memory one file takes).",
    )
    poll_seconds: float = Field(
        examples=[30.0], default=2.0, gt=0, description="Pause between directory scans."
    )


class BatchFileSinkSettings(AdapterSettings):
    """Write a period's events as one CSV or JSON-lines file, on a cron schedule."""

    directory: Path = Field(
        examples=["/exchange/erp"], description="Where the period files are written."
    )
    schedule: str = Field(
        description="Cron expression of the period ends (5 fields, or 6 with seconds).",
        examples=["0 2 * * *"],
    )
    name: str = Field(
        examples=["sales-{period}.csv"],
        default="report-{period}.csv",
        description="File name; {period} is the period's end (UTC, 20261124T020000Z).",
    )
    format: Literal["csv", "jsonl"] = Field(
        examples=["jsonl"], default="csv", description="csv or jsonl."
    )
    columns: list[FieldPath] = Field(
        examples=[["order_id", "total", "currency"]],
        default_factory=list,
        description="CSV columns, fields of each event's data (dotted paths); required for csv.",
    )

    @model_validator(mode="after")
    def _columns_for_csv(self) -> BatchFileSinkSettings:
        if self.format == "csv" and not self.columns:
            raise ValueError("format csv needs columns")
        return self
