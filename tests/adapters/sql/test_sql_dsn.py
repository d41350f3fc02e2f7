"""A PostgreSQL DSN's password never shows in the sql adapter's errors or logs, in any form."""

from __future__ import annotations

import pytest

from adapters.sql import SqlSink, SqlSource
from adapters.sql.settings import SqlSinkSettings
from adapters.sql.source_settings import SqlSourceSettings
from esb import ConfigError, TransientError
from esb.testing import MemoryBus, free_port

SECRET = "s3cret"
#: Every place a libpq connection string can carry a password, and one libpq cannot parse.
FORMS = [
    "postgresql://esb@127.0.0.1:{port}/crm?password=s3cret",
    "postgresql://esb:s3cret@127.0.0.1:{port}/crm",
    "postgres://esb@127.0.0.1:{port}/crm?sslmode=disable&password=s3cret",
    "host=127.0.0.1 port={port} dbname=crm user=esb password=s3cret",
    "host=127.0.0.1 port={port} dbname=crm password='s3cret'",
]
#: A DSN libpq cannot parse: a wrong setting, which no retry fixes.
UNPARSABLE = "postgresql://esb@[127.0.0.1/crm?password=s3cret"


def expected(form: str) -> type[Exception]:
    """Nothing listens on the port: transient, for the runtime to retry the open."""
    return ConfigError if form == UNPARSABLE else TransientError


@pytest.mark.parametrize("form", [*FORMS, UNPARSABLE])
async def test_an_unreachable_sink_dsn_is_named_without_its_password(
    form: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = form.format(port=free_port())
    sink = SqlSink(SqlSinkSettings(dsn=dsn, table="t", columns={"a": "data.a"}, mode="insert"))
    with pytest.raises(expected(form)) as error:
        await sink.open()
    text = str(error.value)
    assert SECRET not in text
    assert SECRET not in caplog.text
    assert "127.0.0.1" in text or "cannot parse" in text


@pytest.mark.parametrize("form", [*FORMS, UNPARSABLE])
async def test_an_unreachable_source_dsn_is_named_without_its_password(
    form: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = form.format(port=free_port())
    settings = SqlSourceSettings(
        dsn=dsn,
        table="deals",
        id_column="id",
        cursor_column="id",
        event_type="crm.deal.won",
    )
    with pytest.raises(expected(form)) as error:
        await SqlSource(settings, MemoryBus()).open()
    text = str(error.value)
    assert SECRET not in text
    assert SECRET not in caplog.text
    assert "127.0.0.1" in text or "cannot parse" in text
