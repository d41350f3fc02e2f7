"""Settings of the SQL sink."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from esb.settings import AdapterSettings

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"


class SqlSinkSettings(AdapterSettings):
    """Write each event as a row: insert, or upsert by key, in a transaction per event."""

    dsn: SecretStr = Field(
        description="postgresql://user@host/db, or sqlite:///path/to/file.db.",
        examples=["postgresql://esb@db/accounting", "sqlite:///data/accounting.db"],
    )
    table: str = Field(pattern=IDENTIFIER, description="Target table.")
    columns: dict[str, str] = Field(
        description="Column to value: data.<path>, or one of id, type, source, subject, time.",
        examples=[{"client_id": "data.client_id", "amount": "data.amount", "event_id": "id"}],
    )
    mode: Literal["insert", "upsert"] = Field(
        default="upsert", description="upsert updates the row with the same key."
    )
    key: list[str] = Field(
        default_factory=list, description="Columns that identify a row (upsert)."
    )

    @field_validator("columns")
    @classmethod
    def _column_names(cls, value: dict[str, str]) -> dict[str, str]:
        for column, source in value.items():
            if not re.match(IDENTIFIER, column):
                raise ValueError(f"{column!r} is not a plain column name")
            head = source.split(".", 1)[0]
            if head not in ("data", "id", "type", "source", "subject", "time"):
                raise ValueError(f"{column}: {source!r} is not data.<path> or an attribute")
        if not value:
            raise ValueError("map at least one column")
        return value

    @model_validator(mode="after")
    def _key_for_upsert(self) -> SqlSinkSettings:
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"key columns {missing} are not in columns")
        if self.mode == "upsert" and not self.key:
            raise ValueError("mode upsert needs key columns")
        return self
