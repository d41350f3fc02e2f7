"""The batch file sink: a period's events written as one file when the period ends."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from adapters.files import BatchFileSink
from adapters.files.settings import BatchFileSinkSettings
from esb import CloudEvent, ConfigError


def sale(n: int) -> CloudEvent:
    return CloudEvent.new(
        "accounting.sale",
        "urn:acc",
        {"invoice": f"I-{n}", "amount": f"{n}.00", "client": {"id": f"C-{n}"}},
        id=f"s-{n}",
    )


async def test_writes_return_when_the_period_file_is_written(tmp_path: Path) -> None:
    sink = BatchFileSink(
        BatchFileSinkSettings(
            directory=tmp_path,
            schedule="* * * * * *",
            name="sales-{period}.csv",
            columns=["invoice", "amount", "client.id"],
        )
    )
    await sink.open()
    try:
        writes = [asyncio.create_task(sink.write(sale(n))) for n in (1, 2, 3)]
        writes.append(asyncio.create_task(sink.write(sale(2))))  # a redelivery, kept once
        file_there_when_done: list[bool] = []
        for write in writes:
            write.add_done_callback(
                lambda _: file_there_when_done.append(bool(list(tmp_path.glob("sales-*.csv"))))
            )
        await asyncio.wait_for(asyncio.gather(*writes), timeout=5)
        assert file_there_when_done == [True] * 4
    finally:
        await sink.close()
    [report] = list(tmp_path.glob("sales-*.csv"))
    rows = list(csv.reader(report.read_text().splitlines()))
    assert rows == [
        ["invoice", "amount", "client.id"],
        ["I-1", "1.00", "C-1"],
        ["I-2", "2.00", "C-2"],
        ["I-3", "3.00", "C-3"],
    ]
    assert report.name.startswith("sales-2")
    assert report.name.endswith("Z.csv")
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_missing_value_is_an_empty_cell(tmp_path: Path) -> None:
    """Absent, null, or under a non-object: the one rule for a missing value, as in every
    adapter; here the cell is left empty and the event is written."""
    sink = BatchFileSink(
        BatchFileSinkSettings(directory=tmp_path, schedule="0 2 * * *", columns=["n", "client.id"])
    )
    datas = [{"n": 1}, {"n": 2, "client": None}, {"n": 3, "client": {"id": None}}]
    datas += [{"n": 4, "client": ["C-4"]}, {"n": 0, "client": {"id": "C-5"}}]
    events = [CloudEvent.new("sale", "urn:acc", data) for data in datas]
    report = sink.write_file(datetime(2026, 12, 1, 2, tzinfo=UTC), events)
    assert list(csv.reader(report.read_text().splitlines()))[1:] == [
        ["1", ""],
        ["2", ""],
        ["3", ""],
        ["4", ""],
        ["0", "C-5"],
    ]


def test_a_column_that_is_no_path_is_refused_when_the_settings_load(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'client\.\.id' is not a field path"):
        BatchFileSinkSettings(directory=tmp_path, schedule="0 2 * * *", columns=["client..id"])


async def test_jsonl_periods_and_empty_periods(tmp_path: Path) -> None:
    sink = BatchFileSink(
        BatchFileSinkSettings(
            directory=tmp_path,
            schedule="* * * * * *",
            format="jsonl",
            name="p-{period}.jsonl",
        )
    )
    await sink.open()
    try:
        await asyncio.sleep(1.2)  # one empty period: no file
        assert list(tmp_path.glob("p-*.jsonl")) == []
        await asyncio.wait_for(sink.write(sale(7)), timeout=5)
    finally:
        await sink.close()
    [report] = list(tmp_path.glob("p-*.jsonl"))
    assert orjson.loads(report.read_bytes()) == sale(7).data


def test_a_bad_schedule_or_csv_without_columns_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="schedule 'every night'"):
        BatchFileSink(
            BatchFileSinkSettings(directory=tmp_path, schedule="every night", columns=["a"])
        )
    with pytest.raises(ValueError, match="format csv needs columns"):
        BatchFileSinkSettings(directory=tmp_path, schedule="0 2 * * *")
