"""service.data_dir: every file a process keeps lives under it unless given an absolute path,
and a data directory the process cannot write stops ``esb run`` at start in one line."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.http_poll.settings import HttpPollSettings
from adapters.http_poll.source import HttpPollSource
from adapters.sql.source import SqlSource
from adapters.sql.source_settings import SqlSourceSettings
from esb import CursorFile
from esb.data_dir import check_writable
from esb.errors import ConfigError
from esb.idempotency import SqliteStore, build_store
from esb.settings import load_settings
from esb.testing import MemoryBus
from tests.support.processes import esb_cli

SQL_SOURCE = {
    "dsn": "sqlite:///crm.db",
    "table": "deals",
    "id_column": "deal_id",
    "cursor_column": "updated_at",
    "event_type": "crm.deal.changed",
}
HTTP_POLL = {
    "url": "https://crm.example.com/contacts",
    "event_type": "crm.contact.changed",
    "since_param": "since",
    "cursor_field": "updated_at",
}


@contextlib.contextmanager
def read_only_directory(path: Path) -> Iterator[Path]:
    """A directory no process can write in, root included: root ignores the mode bits but not
    the immutable flag."""
    path.mkdir()
    path.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755)


def sqlite_path(settings: Any, service: str) -> Path:
    store = build_store(settings.idempotency, service, settings.service.data_dir)
    assert isinstance(store, SqliteStore)
    return Path(store.path)


def test_every_default_store_path_is_in_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = load_settings(SqlSourceSettings, service={"data_dir": data}, adapter=SQL_SOURCE)
    assert settings.journal.path == data / "esb-journal.sqlite3"
    assert settings.service.discovery_dir == data / "esb-targets"
    assert sqlite_path(settings, "crm-sink") == data / "crm-sink.idempotency.sqlite3"
    sql = SqlSource(settings.adapter, MemoryBus()).cursor
    assert isinstance(sql, CursorFile)
    assert sql.path == data / "deals.cursor.json"
    poll = load_settings(HttpPollSettings, service={"data_dir": data}, adapter=HTTP_POLL)
    http = HttpPollSource(poll.adapter, MemoryBus()).cursor
    assert isinstance(http, CursorFile)
    assert http.path == data / "crm.contact.changed.cursor.json"


def test_a_relative_store_path_is_taken_from_the_data_dir_and_an_absolute_one_kept(
    tmp_path: Path,
) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    settings = load_settings(
        SqlSourceSettings,
        service={"data_dir": data, "discovery_dir": elsewhere / "targets"},
        idempotency={"path": "ids/crm.sqlite3"},
        journal={"path": elsewhere / "journal.sqlite3"},
        adapter={**SQL_SOURCE, "cursor_file": "cursors/deals.json"},
    )
    assert sqlite_path(settings, "crm-sink") == data / "ids" / "crm.sqlite3"
    assert settings.adapter.cursor_file == data / "cursors" / "deals.json"
    assert settings.journal.path == elsewhere / "journal.sqlite3"
    assert settings.service.discovery_dir == elsewhere / "targets"
    assert settings.broker.url_file is None  # only store paths move: secrets stay where given


def test_without_a_data_dir_the_stores_stay_in_the_working_directory() -> None:
    settings = load_settings(SqlSourceSettings, adapter=SQL_SOURCE)
    assert settings.journal.path == Path("esb-journal.sqlite3")
    assert settings.service.discovery_dir == Path("esb-targets")
    assert settings.adapter.cursor_file == Path("deals.cursor.json")
    assert sqlite_path(settings, "crm-sink") == Path("crm-sink.idempotency.sqlite3")


def test_the_environment_sets_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESB_SERVICE__DATA_DIR", str(tmp_path))
    assert load_settings().journal.path == tmp_path / "esb-journal.sqlite3"


def test_a_missing_data_dir_is_created(tmp_path: Path) -> None:
    check_writable(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe leaves nothing behind


def test_a_data_dir_that_cannot_be_written_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with read_only_directory(tmp_path / "ro") as data:
        with pytest.raises(PermissionError):
            (data / "probe").touch()
        with pytest.raises(ConfigError) as caught:
            check_writable(data)
    assert str(caught.value).startswith(f"service.data_dir {data}: cannot write there")
    assert "ESB_SERVICE__DATA_DIR" in str(caught.value)


def test_esb_run_stops_at_start_on_a_read_only_data_dir_in_one_line(tmp_path: Path) -> None:
    with read_only_directory(tmp_path / "ro") as data:
        done = esb_cli(
            {
                "ESB_SERVICE__DATA_DIR": str(data),
                "ESB_ADAPTER__PATH": str(tmp_path / "out.jsonl"),
                "ESB_BROKER__URL": "amqp://guest:guest@127.0.0.1:1/",  # never reached
            },
            "run",
            "sink",
            "jsonl",
        )
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"Error: service.data_dir {data}: cannot write there: ")
    assert "Traceback" not in done.stderr
