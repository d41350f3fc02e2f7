"""The JSON-lines source and sink, on the in-memory bus (adapter logic only)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from adapters.jsonl import JsonLinesSink, JsonLinesSource
from adapters.jsonl.settings import JsonLinesSinkSettings, JsonLinesSourceSettings
from esb import CloudEvent, EnvelopeError, UnroutableError
from esb.testing import MemoryBus


def write_lines(path: Path, *docs: object) -> Path:
    path.write_bytes(b"".join(orjson.dumps(doc) + b"\n" for doc in docs))
    return path


async def test_plain_lines_become_events_with_ids_from_a_field(tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.bind("orders", "shop.order.*")
    path = write_lines(
        tmp_path / "in.jsonl", {"order_id": 1, "total": 5}, {"order_id": 2, "total": 7}
    )
    source = JsonLinesSource(
        JsonLinesSourceSettings(path=path, event_type="shop.order.created", id_field="order_id"),
        bus,
    )
    events = await bus.run_source(source)
    assert [(e.id, e.type, e.data) for e in events] == [
        ("1", "shop.order.created", {"order_id": 1, "total": 5}),
        ("2", "shop.order.created", {"order_id": 2, "total": 7}),
    ]


async def test_structured_lines_keep_their_own_attributes(tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.bind("all")
    path = write_lines(
        tmp_path / "in.jsonl",
        {
            "specversion": "1.0",
            "id": "x-1",
            "source": "urn:crm",
            "type": "crm.deal.won",
            "data": {"d": 1},
        },
    )
    source = JsonLinesSource(JsonLinesSourceSettings(path=path), bus)
    [event] = await bus.run_source(source)
    assert (event.id, event.source, event.type) == ("x-1", "urn:crm", "crm.deal.won")


async def test_a_bad_line_is_refused_with_its_line_and_the_reading_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bus = MemoryBus()
    bus.bind("all")
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": \n{"a": 3}\n')
    source = JsonLinesSource(JsonLinesSourceSettings(path=path, event_type="t.x"), bus)
    await bus.run_source(source)
    assert [e.data for e in bus.published] == [{"a": 1}, {"a": 3}]
    assert source.refused == {"invalid_json": 1}
    assert f"(invalid_json): {path}:2: not valid JSON" in caplog.text


async def test_lines_that_cannot_be_published_are_refused_and_the_others_published(
    tmp_path: Path,
) -> None:
    """Each of these once ended the run (or could not be published at all): a line nested
    deeper than the envelope allows, an integer beyond 64 bits, a duplicate key, an id over
    AMQP's 255 bytes, text that is not UTF-8, a line over max_line_bytes (never held whole)."""
    bus = MemoryBus()
    bus.bind("all")
    path = tmp_path / "in.jsonl"
    lines = [
        b'{"order_id": "SO-1"}',
        b'{"order_id": "SO-2", "deep": ' + b"[" * 100 + b"]" * 100 + b"}",
        b'{"order_id": "SO-3", "n": 18446744073709551616}',
        b'{"order_id": "SO-4", "order_id": "SO-1"}',
        b'{"order_id": "' + b"S" * 300 + b'"}',
        b'{"order_id": "SO-6", "name": "J\xf6rg"}',
        b'{"order_id": "SO-7", "note": "' + b"n" * 5000 + b'"}',
        b'{"order_id": "SO-8"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    settings = JsonLinesSourceSettings(
        path=path, event_type="t.x", id_field="order_id", max_line_bytes=4096
    )
    source = JsonLinesSource(settings, bus)
    await bus.run_source(source)
    assert [e.id for e in bus.published] == ["SO-1", "SO-8"]
    assert source.refused == {
        "too_deep": 1,
        "number_out_of_range": 1,
        "duplicate_key": 1,
        "invalid_attribute": 1,
        "invalid_encoding": 1,
        "too_large": 1,
    }


async def test_a_line_over_the_body_limit_is_refused(tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.bind("all")
    path = write_lines(tmp_path / "in.jsonl", {"note": "n" * 1_100_000}, {"ok": 1})
    source = JsonLinesSource(
        JsonLinesSourceSettings(path=path, event_type="t.x", max_line_bytes=2_000_000), bus
    )
    await bus.run_source(source)
    assert [e.data for e in bus.published] == [{"ok": 1}]
    assert source.refused == {"too_large": 1}


async def test_unroutable_events_fail_the_source(tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.bind("crm", "crm.#")
    path = write_lines(tmp_path / "in.jsonl", {"a": 1})
    source = JsonLinesSource(
        JsonLinesSourceSettings(path=path, event_type="shop.order.created"), bus
    )
    with pytest.raises(UnroutableError, match=r"shop\.order\.created"):
        await bus.run_source(source)


async def test_sink_writes_each_id_once_across_restarts(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    events = [CloudEvent.new("t.x", "urn:t", {"n": n}) for n in range(3)]
    first = JsonLinesSink(JsonLinesSinkSettings(path=out))
    await first.open()
    for event in events[:2]:
        await first.write(event)
    await first.close()

    second = JsonLinesSink(JsonLinesSinkSettings(path=out))
    await second.open()
    written = [await second.write(event) for event in events]
    await second.close()
    assert written == [False, False, True]  # the runtime counts the first two as duplicates
    assert [orjson.loads(line)["id"] for line in out.read_bytes().splitlines()] == [
        e.id for e in events
    ]


async def test_sink_drops_a_line_cut_short_by_a_crash(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    whole = CloudEvent.new("t.x", "urn:t", {"n": 1})
    out.write_bytes(whole.to_structured() + b"\n" + b'{"specversion":"1.0","id":"cut')
    sink = JsonLinesSink(JsonLinesSinkSettings(path=out))
    await sink.open()
    await sink.write(CloudEvent.new("t.x", "urn:t", {"n": 2}))
    await sink.close()
    lines = out.read_bytes().splitlines()
    assert len(lines) == 2
    assert orjson.loads(lines[0])["id"] == whole.id


async def test_memory_bus_delivers_through_the_sink(tmp_path: Path) -> None:
    bus = MemoryBus()
    bus.bind("out", "t.#")
    for n in range(5):
        await bus.emit(CloudEvent.new("t.x", "urn:t", {"n": n}))
    sink = JsonLinesSink(JsonLinesSinkSettings(path=tmp_path / "out.jsonl"))
    await sink.open()
    assert await bus.drain("out", sink) == 5
    await sink.close()
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == 5


class RefusingBus(MemoryBus):
    """A bus whose encoder refuses the event with id "bad", as the AMQP layer may."""

    async def emit(self, event: CloudEvent) -> None:
        if event.id == "bad":
            raise EnvelopeError("data", "cannot be encoded", "unencodable")
        await super().emit(event)


async def test_an_event_the_broker_layer_cannot_encode_is_refused_not_fatal(
    tmp_path: Path,
) -> None:
    bus = RefusingBus()
    bus.bind("all")
    path = write_lines(tmp_path / "in.jsonl", {"k": "a"}, {"k": "bad"}, {"k": "c"})
    source = JsonLinesSource(
        JsonLinesSourceSettings(path=path, event_type="t.x", id_field="k"), bus
    )
    await bus.run_source(source)
    assert [e.id for e in bus.published] == ["a", "c"]
    assert source.refused == {"unencodable": 1}


async def test_a_line_over_the_bus_body_limit_is_refused_not_published(tmp_path: Path) -> None:
    """The limit is the process's broker.max_body_bytes (here lowered), not the built-in
    1 MiB: an event every consumer would park is refused at the edge instead."""
    bus = MemoryBus(max_body_bytes=1_000)
    bus.bind("all")
    path = write_lines(tmp_path / "in.jsonl", {"note": "n" * 2_000}, {"ok": 1})
    source = JsonLinesSource(JsonLinesSourceSettings(path=path, event_type="t.x"), bus)
    await bus.run_source(source)
    assert [e.data for e in bus.published] == [{"ok": 1}]
    assert source.refused == {"too_large": 1}
