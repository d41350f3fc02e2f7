"""Settings of the SQL sink."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from esb import AdapterSettings, EventRef

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"


def column_ref(source: str, roots: tuple[str, ...] = ("data", "row")) -> EventRef:
    """What a column takes: an attribute, ``data`` or ``row``, or a path in either."""
    return EventRef.parse(source, roots=roots, whole_roots=True)


def _check_columns(value: dict[str, str], roots: tuple[str, ...]) -> dict[str, str]:
    for column, source in value.items():
        if not re.match(IDENTIFIER, column):
            raise ValueError(f"{column!r} is not a plain column name")
        try:
            column_ref(source, roots)
        except ValueError as exc:
            raise ValueError(f"{column}: {exc}") from None
    if not value:
        raise ValueError("map at least one column")
    return value


class SqlOutboxSettings(BaseModel):
    """One row inserted per event into another table, in the transaction of the event's rows."""

    model_config = ConfigDict(extra="forbid")

    table: str = Field(
        examples=["reservations"], pattern=IDENTIFIER, description="The outbox table."
    )
    columns: dict[str, str] = Field(
        description="Column to value: data.<path>, or one of id, type, source, subject, time.",
        examples=[{"order_id": "data.order_id", "email": "data.customer.email"}],
    )

    @field_validator("columns")
    @classmethod
    def _column_names(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_columns(value, ("data",))


class SqlSinkSettings(AdapterSettings):
    """Write each event as rows: insert, upsert or increment by key, applied exactly once."""

    dsn: SecretStr = Field(
        description="postgresql://user@host/db, or sqlite:///path/to/file.db.",
        examples=["postgresql://esb@db/accounting", "sqlite:///data/accounting.db"],
    )
    table: str = Field(examples=["ledger"], pattern=IDENTIFIER, description="Target table.")
    columns: dict[str, str] = Field(
        description="Column to value: data.<path>, one of id, type, source, subject, time, "
        "or (with rows) row.<path> or row.",
        examples=[{"client_id": "data.client_id", "amount": "data.amount", "event_id": "id"}],
    )
    mode: Literal["insert", "upsert", "increment"] = Field(
        examples=["increment"],
        default="upsert",
        description="upsert updates the row with the same key; increment adds each non-key "
        "value to the existing row with the same key.",
    )
    key: list[str] = Field(
        examples=[["sku"]],
        default_factory=list,
        description="Columns that identify a row (upsert, increment).",
    )
    rows: str | None = Field(
        default=None,
        description="data.<path> of a list in the event: one row per element, all in one "
        "transaction; none writes one row per event.",
        examples=["data.items"],
    )
    transaction: Literal["event", "batch"] = Field(
        examples=["batch"],
        default="event",
        description="event commits each event alone; batch commits concurrent events together.",
    )
    batch_size: int = Field(
        examples=[200],
        default=100,
        ge=1,
        description="Events per batch transaction at most (batch).",
    )
    batch_wait: float = Field(
        examples=[0.1],
        default=0.05,
        gt=0,
        description="Seconds a batch waits for more events after its first one (batch).",
    )

    outbox: SqlOutboxSettings | None = Field(
        default=None,
        description="Also insert one row per event into this table, in the same transaction "
        "as its rows (a transactional outbox: an sql source in outbox mode publishes it).",
        examples=[{"table": "reservations", "columns": {"order_id": "data.order_id"}}],
    )

    @field_validator("columns")
    @classmethod
    def _column_names(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_columns(value, ("data", "row"))

    @field_validator("rows")
    @classmethod
    def _rows_in_data(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                EventRef.parse(value, attributes=())
            except ValueError as exc:
                raise ValueError(f"rows: {exc}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SqlSinkSettings:
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"key columns {missing} are not in columns")
        if self.mode in ("upsert", "increment") and not self.key:
            raise ValueError(f"mode {self.mode} needs key columns")
        if self.mode == "increment" and set(self.columns) <= set(self.key):
            raise ValueError("mode increment needs a column besides the key to add to")
        from_row = [c for c, source in self.columns.items() if column_ref(source).head == "row"]
        if from_row and self.rows is None:
            raise ValueError(
                f"columns {from_row} take row values: set rows to the list they come from"
            )
        return self
