"""The dropped-files source on real files: all or nothing per file, moved after the confirm."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from adapters.files import FileSource
from adapters.files.settings import FileSourceSettings
from esb import UnroutableError
from esb.testing import MemoryBus


def source(directory: Path, bus: MemoryBus, **extra: Any) -> FileSource:
    settings = FileSourceSettings.model_validate(
        {"directory": directory, "event_type": "erp.order.imported", "settle_seconds": 0, **extra}
    )
    return FileSource(settings, bus)


async def scan(files: FileSource) -> None:
    await files.open()
    for path in files.ready_files():
        await files.take(path)


async def test_a_good_csv_becomes_events_and_moves_to_done(tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.bind("erp")
    (tmp_path / "orders-1.csv").write_text("order,qty\nSO-1,2\nSO-2,5\n")
    await scan(source(tmp_path, bus, id_field="order"))
    assert [(e.id, e.data, e.subject) for e in bus.published] == [
        ("SO-1", {"order": "SO-1", "qty": "2"}, "orders-1.csv"),
        ("SO-2", {"order": "SO-2", "qty": "5"}, "orders-1.csv"),
    ]
    assert (tmp_path / "done" / "orders-1.csv").exists()
    assert not (tmp_path / "orders-1.csv").exists()


async def test_a_bad_row_sends_the_whole_file_to_error_with_the_reason(tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.bind("erp")
    (tmp_path / "orders-2.csv").write_text("order,qty\nSO-3,1\nSO-4,1,extra\n")
    (tmp_path / "orders-3.jsonl").write_text('{"order": "SO-5"}\n{"order": \n')
    csv_source = source(tmp_path, bus)
    await scan(csv_source)
    await scan(source(tmp_path, bus, pattern="*.jsonl", format="jsonl"))
    assert bus.published == []
    assert csv_source.refused == {"bad_file": 1}
    assert (tmp_path / "error" / "orders-2.csv.reason.txt").read_text() == (
        "orders-2.csv:3: 3 fields, the header has 2\n"
    )
    reason = (tmp_path / "error" / "orders-3.jsonl.reason.txt").read_text()
    assert reason.startswith("orders-3.jsonl:2: not valid JSON")


async def test_a_file_stays_until_the_bus_takes_it(tmp_path: Path) -> None:
    bus = MemoryBus()  # nothing bound: every publish is refused
    (tmp_path / "orders-4.csv").write_text("order,qty\nSO-6,1\n")
    with pytest.raises(UnroutableError):
        await scan(source(tmp_path, bus))
    assert (tmp_path / "orders-4.csv").exists()
    bus.bind("erp")
    await scan(source(tmp_path, bus))
    assert [e.id for e in bus.published] == ["orders-4.csv:2"]
    assert (tmp_path / "done" / "orders-4.csv").exists()


async def test_a_file_still_being_written_is_left_alone(tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.bind("erp")
    fresh = tmp_path / "orders-5.csv"
    fresh.write_text("order,qty\nSO-7,1\n")
    files = source(tmp_path, bus, settle_seconds=60)
    assert files.ready_files() == []
    old = time.time() - 120
    os.utime(fresh, (old, old))
    assert files.ready_files() == [fresh]
