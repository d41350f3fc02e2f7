"""The dropped-files source on real files: all or nothing per file, moved after the confirm."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from adapters.files import FileSource
from adapters.files.settings import FileSourceSettings
from esb import CloudEvent, ConfigError, UnroutableError
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
    files = source(tmp_path, bus, id_field="order")
    await scan(files)
    assert files.counted == {("file", "read"): 1, ("row", "read"): 2}
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
    assert csv_source.counted == {("file", "refused"): 1}
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


def drop_box(tmp_path: Path) -> tuple[Path, Path]:
    """A drop directory, and a private file outside it that a dropped entry may point at."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    private = tmp_path / "private" / "accounts.csv"
    private.parent.mkdir()
    private.write_text("user,password\nroot,hunter2\n")
    return inbox, private


async def test_a_symbolic_link_is_not_followed_but_moved_to_error_with_the_reason(
    tmp_path: Path,
) -> None:
    """A dropped leak.csv linking to a file outside the drop box published its rows."""
    inbox, private = drop_box(tmp_path)
    (inbox / "leak.csv").symlink_to(private)
    (inbox / "orders.csv").write_text("order,qty\nSO-1,2\n")
    bus = MemoryBus()
    bus.bind("erp")
    files = source(inbox, bus)
    await scan(files)
    assert [e.data for e in bus.published] == [{"order": "SO-1", "qty": "2"}]
    assert files.refused == {"not_regular_file": 1}
    assert (inbox / "error" / "leak.csv").is_symlink()  # the link moved, not its target
    assert (inbox / "error" / "leak.csv.reason.txt").read_text() == (
        "leak.csv: a symbolic link, not followed\n"
    )
    assert private.read_text() == "user,password\nroot,hunter2\n"


async def test_a_fifo_or_a_hard_link_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO to read blocks until a writer comes; a hard link reaches outside too."""
    inbox, private = drop_box(tmp_path)
    os.mkfifo(inbox / "pipe.csv")
    os.link(private, inbox / "hard.csv")
    bus = MemoryBus()
    bus.bind("erp")
    files = source(inbox, bus)
    await asyncio.wait_for(scan(files), 5)
    assert bus.published == []
    assert files.refused == {"not_regular_file": 2}
    assert (inbox / "error" / "pipe.csv.reason.txt").read_text() == "pipe.csv: a FIFO, not read\n"
    assert (inbox / "error" / "hard.csv.reason.txt").read_text() == (
        "hard.csv: has other hard links, not read\n"
    )


async def test_hostile_content_and_names_end_in_error_with_their_reason(tmp_path: Path) -> None:
    """Each bad file is moved with its reason; the good one beside them is still published,
    and nothing of a bad file is, even where its first rows were fine."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "latin1.csv").write_bytes(b"order,name\nSO-1,J\xf6rg\n")
    (inbox / "long-id.csv").write_text(f"order,qty\nSO-2,1\n{'S' * 300},1\n")
    (inbox / "big.csv").write_text("order,qty\n" + "SO-4,1\n" * 2000)
    (inbox / b"name-\xff.csv".decode("utf-8", "surrogateescape")).write_text("order\nSO-5\n")
    (inbox / "deep.jsonl").write_text('{"order": "SO-6"}\n' + "[" * 100 + "]" * 100 + "\n")
    (inbox / "good.csv").write_text("order,qty\nSO-7,1\n")
    bus = MemoryBus()
    bus.bind("erp")
    files = source(inbox, bus, id_field="order", max_file_bytes=10_000, pattern="*")
    await scan(files)
    assert [e.id for e in bus.published] == ["SO-7"]
    assert files.refused == {
        "invalid_encoding": 2,
        "invalid_attribute": 1,
        "too_large": 1,
        "bad_file": 1,  # deep.jsonl read as CSV: its second line has no order
    }
    reasons = {p.name: p.read_text() for p in (inbox / "error").glob("*.reason.txt")}
    assert reasons["latin1.csv.reason.txt"].startswith("latin1.csv: not utf-8 text")
    assert reasons["long-id.csv.reason.txt"].startswith("long-id.csv:3: id: ")
    assert reasons["big.csv.reason.txt"].startswith("big.csv: larger than max_file_bytes")
    hostile = b"name-\xff.csv.reason.txt".decode("utf-8", "surrogateescape")
    assert reasons[hostile] == "'name-\\udcff.csv':2: subject: is not valid UTF-8 text\n"
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == []


async def test_a_jsonl_line_too_deep_or_too_large_refuses_its_file(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "deep.jsonl").write_text('{"order": "SO-1"}\n{"a": ' + "[" * 100 + "]" * 100 + "}\n")
    (inbox / "huge.jsonl").write_text('{"order": "SO-2"}\n{"note": "' + "n" * 1_100_000 + '"}\n')
    bus = MemoryBus()
    bus.bind("erp")
    files = source(inbox, bus, format="jsonl", pattern="*.jsonl")
    await scan(files)
    assert bus.published == []
    assert files.refused == {"too_deep": 1, "too_large": 1}
    reason = (inbox / "error" / "huge.jsonl.reason.txt").read_text()
    assert reason.startswith("huge.jsonl:2: body: ")


async def test_a_hostile_file_does_not_stop_the_running_source(tmp_path: Path) -> None:
    """The source keeps scanning after refusing: a good file dropped later is published."""
    inbox, private = drop_box(tmp_path)
    (inbox / "leak.csv").symlink_to(private)
    (inbox / "long-id.csv").write_text(f"order,qty\n{'S' * 300},1\n")
    bus = MemoryBus()
    bus.bind("erp")
    files = source(inbox, bus, id_field="order", poll_seconds=0.05)
    await files.open()
    running = asyncio.create_task(files.run())
    for _ in range(100):
        if sum(files.refused.values()) == 2:
            break
        await asyncio.sleep(0.02)
    (inbox / "later.csv").write_text("order,qty\nSO-9,1\n")
    for _ in range(100):
        if bus.published:
            break
        await asyncio.sleep(0.02)
    files.stopping.set()
    await asyncio.wait_for(running, 5)
    assert [e.id for e in bus.published] == ["SO-9"]
    assert files.refused == {"not_regular_file": 1, "invalid_attribute": 1}


async def test_a_refused_file_with_a_name_near_the_limit_gets_a_shortened_reason_file(
    tmp_path: Path,
) -> None:
    """<name>.reason.txt would pass the 255-byte name limit: writing it crashed the source."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    name = "n" * 240 + ".jsonl"
    (inbox / name).write_text('{"a": 1, "a": 2}\n')
    bus = MemoryBus()
    bus.bind("erp")
    files = source(inbox, bus, format="jsonl", pattern="*.jsonl")
    await scan(files)
    assert files.refused == {"duplicate_key": 1}
    assert (inbox / "error" / name).exists()
    [reason_file] = (inbox / "error").glob("*.reason.txt")
    assert len(reason_file.name) <= 255
    assert reason_file.read_text().startswith(f"{name}:1: ")


async def test_a_jsonl_row_holding_unicode_line_separators_is_one_row(tmp_path: Path) -> None:
    """U+0085 and U+2028 may stand in a JSON string as they are; only "\\n" ends a row."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "rows.jsonl").write_text(
        '{"order": "SO-1", "note": "a\x85b\u2028c"}\n\n{"order": "SO-2"}\n', encoding="utf-8"
    )
    bus = MemoryBus()
    bus.bind("erp")
    files = source(inbox, bus, format="jsonl", id_field="order", pattern="*.jsonl")
    await scan(files)
    assert files.refused == {}
    assert [e.id for e in bus.published] == ["SO-1", "SO-2"]
    assert bus.published[0].data["note"] == "a\x85b\u2028c"


async def test_a_file_over_the_bus_body_limit_goes_to_error(tmp_path: Path) -> None:
    """The limit is the process's broker.max_body_bytes (here lowered), not the built-in
    1 MiB: a row every consumer would park refuses its file before anything is published."""
    bus = MemoryBus(max_body_bytes=1_000)
    bus.bind("erp")
    (tmp_path / "orders.csv").write_text(f"order,note\nSO-1,a\nSO-2,{'n' * 2_000}\n")
    files = source(tmp_path, bus)
    await scan(files)
    assert bus.published == []
    assert files.refused == {"too_large": 1}
    assert (tmp_path / "error" / "orders.csv").exists()


async def test_error_swapped_for_a_link_after_start_does_not_send_files_elsewhere(
    tmp_path: Path,
) -> None:
    """done/ and error/ are opened once: a drop-box writer who replaces error with a link to
    another directory once made the source move refused files (and write reasons) there."""
    inbox, private = drop_box(tmp_path)
    bus = MemoryBus()
    bus.bind("erp")
    files = source(inbox, bus)
    await files.open()
    (inbox / "error").rename(inbox / "error-real")
    (inbox / "error").symlink_to(private.parent, target_is_directory=True)
    (inbox / "bad.csv").write_text("order,qty\nSO-1\n")
    for path in files.ready_files():
        await files.take(path)
    await files.close()
    assert files.refused == {"bad_file": 1}
    assert sorted(p.name for p in private.parent.iterdir()) == ["accounts.csv"]
    assert sorted(p.name for p in (inbox / "error-real").iterdir()) == [
        "bad.csv",
        "bad.csv.reason.txt",
    ]


async def test_a_link_in_place_of_error_at_start_is_refused(tmp_path: Path) -> None:
    inbox, private = drop_box(tmp_path)
    (inbox / "error").symlink_to(private.parent, target_is_directory=True)
    with pytest.raises(ConfigError, match=r"error directory .* cannot be opened"):
        await source(inbox, MemoryBus()).open()


async def test_a_reason_file_planted_as_a_link_is_not_written_through(tmp_path: Path) -> None:
    """The reason goes to a new file beside it; the link's target keeps its content."""
    inbox, private = drop_box(tmp_path)
    (inbox / "error").mkdir()
    (inbox / "error" / "bad.csv.reason.txt").symlink_to(private)
    (inbox / "bad.csv").write_text("order,qty\nSO-1\n")
    files = source(inbox, MemoryBus())
    await scan(files)
    assert private.read_text() == "user,password\nroot,hunter2\n"
    assert (inbox / "error" / "bad.csv.1.reason.txt").read_text() == (
        "bad.csv:2: 1 fields, the header has 2\n"
    )


class DeletingBus(MemoryBus):
    """A bus during whose publish someone deletes the file being published."""

    def __init__(self, doomed: Path) -> None:
        super().__init__()
        self.doomed = doomed

    async def emit(self, event: CloudEvent) -> None:
        self.doomed.unlink(missing_ok=True)
        await super().emit(event)


async def test_a_file_deleted_after_listing_is_gone_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleted before it was read, or after its rows were published, a file once crashed the
    source with FileNotFoundError; now it is logged at info and the next file is taken."""
    caplog.set_level(logging.INFO)
    (tmp_path / "early.csv").write_text("order,qty\nSO-1,2\n")
    (tmp_path / "late.csv").write_text("order,qty\nSO-2,3\n")
    bus = DeletingBus(tmp_path / "late.csv")
    bus.bind("erp")
    files = source(tmp_path, bus)
    await files.open()
    listed = files.ready_files()
    (tmp_path / "early.csv").unlink()
    assert [await files.take(path) for path in listed] == [0, 1]
    assert [e.data["order"] for e in bus.published] == ["SO-2"]
    assert files.refused == {}
    assert "early.csv was taken away before it was read" in caplog.text
    assert "late.csv was taken away once published" in caplog.text
