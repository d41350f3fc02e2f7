"""Settings of the SQL source."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from adapters.sql.settings import IDENTIFIER
from esb import PollingSettings, StorePath


class SqlSourceSettings(PollingSettings):
    """Poll a table for new or changed rows (by a cursor column), or drain an outbox table."""

    dsn: SecretStr = Field(
        description="postgresql://user@host/db, or sqlite:///path/to/file.db.",
        examples=["postgresql://esb@crm-db/crm"],
    )
    table: str = Field(examples=["deals"], pattern=IDENTIFIER, description="Table to read.")
    id_column: str = Field(
        examples=["deal_id"], pattern=IDENTIFIER, description="The rows' unique id."
    )
    mode: Literal["cursor", "outbox"] = Field(
        examples=["outbox"],
        default="cursor",
        description="cursor: rows past the last cursor value; outbox: every row, removed or "
        "marked once published.",
    )
    cursor_column: str | None = Field(
        examples=["updated_at"],
        default=None,
        pattern=IDENTIFIER,
        description="An increasing column (an id or updated_at); rows are read in its order.",
    )
    cursor_file: StorePath | None = Field(
        examples=["/var/lib/esb/deals.cursor"],
        default=None,
        description="Where the cursor is kept between runs (mode cursor); default "
        "<table>.cursor.json in service.data_dir.",
    )
    where: str | None = Field(
        examples=["stage = 'won'"],
        default=None,
        description="An extra SQL condition, e.g. status = 'won' (trusted config).",
    )
    outbox_done: Literal["delete", "mark"] = Field(
        examples=["mark"],
        default="delete",
        description="What to do with an outbox row once published.",
    )
    mark_column: str | None = Field(
        examples=["published_at"],
        default=None,
        pattern=IDENTIFIER,
        description="Column set to the publish time (mark).",
    )
    event_type: str = Field(description="Type of the events.", examples=["crm.deal.won"])
    event_source: str = Field(
        examples=["urn:crm"], default="urn:esb:sql", description="Source attribute."
    )
    delay_seconds: float = Field(
        examples=[5.0],
        default=0.0,
        ge=0,
        description="Leave rows whose cursor time is younger than this for a later poll, so a "
        "transaction that stamped its rows earlier but commits later is not skipped (cursor "
        "mode; the cursor must hold the change time: a timestamp, ISO text or epoch seconds).",
    )
    batch_size: int = Field(examples=[100], default=500, ge=1, description="Rows per poll.")

    @model_validator(mode="after")
    def _mode_needs(self) -> SqlSourceSettings:
        if self.mode == "cursor" and self.cursor_column is None:
            raise ValueError("mode cursor needs cursor_column")
        if self.mode == "outbox" and self.delay_seconds:
            raise ValueError("delay_seconds applies to mode cursor only")
        if self.mode == "outbox" and self.outbox_done == "mark" and self.mark_column is None:
            raise ValueError("outbox_done mark needs mark_column")
        return self

    @model_validator(mode="after")
    def _cursor_file_by_table(self) -> SqlSourceSettings:
        """Set here, not in the source, so the process settings place it in the data dir."""
        if self.mode == "cursor" and self.cursor_file is None:
            self.cursor_file = Path(f"{self.table}.cursor.json")
        return self
