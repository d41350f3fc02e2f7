"""Invalid messages are parked with their reason and counted; the sink keeps running."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from esb import CloudEvent, to_message
from esb.parking import ERROR, REASON, SERVICE
from tests.conftest import Names
from tests.support.processes import EsbProcess, esb_cli, read_ids, wait_for
from tests.support.prometheus import metric
from tests.support.rabbit import queue_depth
from tests.support.raw_amqp import RawText


async def test_malformed_missing_and_oversize_messages_are_parked_and_counted(
    esb_env: dict[str, str], names: Names, amqp_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    sink = EsbProcess(
        ["run", "sink", "jsonl"],
        {
            **esb_env,
            "ESB_ADAPTER__PATH": str(out),
            "ESB_BROKER__MAX_BODY_BYTES": "4096",
            "ESB_SERVICE__NAME": "bad-input-sink",
        },
        tmp_path / "sink.log",
    )
    sink.wait_ready()
    ce = {"ce-id": "bad-1", "ce-source": "urn:t", "ce-type": "t.bad", "ce-specversion": "1.0"}
    good = CloudEvent.new("t.good", "urn:t", {"ok": True})
    connection = await aio_pika.connect(amqp_url)
    try:
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(names.exchange)
            bad_messages = [
                aio_pika.Message(b'{"total": 1', headers=ce),
                aio_pika.Message(b"{}", headers={k: v for k, v in ce.items() if k != "ce-source"}),
                aio_pika.Message(orjson.dumps({"blob": "x" * 5000}), headers=ce),
            ]
            for message in bad_messages:
                await exchange.publish(message, routing_key="t.bad")
            await exchange.publish(to_message(good), routing_key="t.good")

            wait_for(lambda: read_ids(out) == [good.id], 30, sink.tail)
            dlq = await channel.declare_queue(names.queue + ".dlq", passive=True)
            parked = []
            for _ in range(3):
                message = await dlq.get(timeout=5)
                assert message is not None
                parked.append(message)
                await message.ack()
        assert sorted(reason_of(m) for m in parked) == [
            "dead-lettered: rejected",
            "invalid_json",
            "missing_attribute",
        ]
        copies = [m for m in parked if REASON in (m.headers or {})]
        assert {str(m.headers[SERVICE]) for m in copies} == {"bad-input-sink"}
        errors = {str(m.headers[REASON]): str(m.headers[ERROR]) for m in copies}
        # the oversize body is not copied: the broker dead-letters the original, whole
        rejected = next(m for m in parked if REASON not in (m.headers or {}))
        assert rejected.body == bad_messages[2].body
        assert "too_large" in sink.tail()
        assert errors["missing_attribute"].startswith("source: required attribute is missing")
        assert parked[0].body == b'{"total": 1'

        text = sink.metrics()
        for reason in ("invalid_json", "missing_attribute", "too_large"):
            assert (
                metric(text, "esb_envelope_rejected_total", service="bad-input-sink", reason=reason)
                == 1
            )
        assert (
            metric(
                text,
                "esb_consumed_total",
                service="bad-input-sink",
                adapter="jsonl",
                outcome="parked",
            )
            == 3
        )
        assert sink.popen.poll() is None, "the sink died on bad input"
    finally:
        sink.stop()


def reason_of(message: AbstractIncomingMessage) -> str:
    """Why a message is in a parking lot: esb's reason, or the broker's dead-lettering one
    (a body over the limit is rejected and dead-lettered whole, not copied)."""
    headers = message.headers or {}
    if REASON in headers:
        return str(headers[REASON])
    return f"dead-lettered: {headers.get('x-first-death-reason')}"


def nested_table(depth: int) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for _ in range(depth):
        table = {"a": table}
    return table


CE = {"ce-source": "urn:hostile", "ce-type": "t.hostile", "ce-specversion": "1.0"}
DEEP = 1_000
# name: (body, headers, the reason it is parked for)
HOSTILE: dict[str, tuple[bytes, dict[str, Any], str]] = {
    "invalid_encoding": (b'{"name": "\xff\xfe broken"}', CE, "invalid_encoding"),
    "invalid_json": (b'{"total": 1,', CE, "invalid_json"),
    "deep_nesting": (b"[" * 100_000 + b"]" * 100_000, CE, "too_deep"),
    "huge_number": (b'{"amount": ' + b"9" * 5_000 + b"}", CE, "invalid_json"),
    "nan": (b'{"amount": NaN}', CE, "invalid_json"),
    "duplicate_key": (b'{"amount": 1, "amount": 1000000}', CE, "duplicate_key"),
    "too_large": (b'{"blob": "' + b"x" * 2_000_000 + b'"}', CE, "dead-lettered: rejected"),
    # Python's json recursed on this one (the duplicate-key check): it stayed unacked for ever.
    "deep_duplicates": (
        b'{"a": 1, "a": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        CE,
        "too_deep",
    ),
    # orjson reads 1,024 levels but writes 254: this one could not be published onwards.
    "deeper_than_encodable": (b"[" * 300 + b"]" * 300, CE, "too_deep"),
    "integer_over_64_bits": (b'{"order": 18446744073709551616}', CE, "number_out_of_range"),
    "long_duplicate_key": (
        b'{"' + b"k" * 96_000 + b'": 1, "' + b"k" * 96_000 + b'": 2}',
        CE,
        "duplicate_key",
    ),
    "header_not_utf8": (b"{}", {**CE, "ce-subject": RawText(b"\xff\xfe")}, "invalid_encoding"),
    "id_over_255_bytes": (b"{}", {**CE, "ce-id": "i" * 300}, "invalid_attribute"),
    "type_over_255_bytes": (b"{}", {**CE, "ce-type": "t." * 200}, "invalid_attribute"),
    # ~18,000 levels fill a 128 KiB frame; decoding it recursed past Python's limit in the
    # client's reader, which took the whole connection down at every redelivery.
    "nested_header_tables": (b"{}", {**CE, "x-nest": nested_table(18_000)}, "headers_too_large"),
    "too_many_headers": (
        b"{}",
        {**CE, **{f"x-junk-{n}": "x" for n in range(100)}},
        "headers_too_large",
    ),
}


async def test_hostile_messages_are_each_parked_once_and_never_crash_or_loop(
    esb_env: dict[str, str], names: Names, amqp_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    sink = EsbProcess(
        ["run", "sink", "jsonl"],
        {**esb_env, "ESB_ADAPTER__PATH": str(out), "ESB_SERVICE__NAME": "hostile-sink"},
        tmp_path / "sink.log",
    )
    sink.wait_ready()
    good = CloudEvent.new("t.good", "urn:t", {"ok": True})
    mixed_case = CloudEvent.new("t.good", "urn:t", {"structured": True})
    try:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(names.exchange)
            limit = sys.getrecursionlimit()
            sys.setrecursionlimit(50_000)  # pamqp encodes tables recursively
            try:
                for name, (body, headers, _) in HOSTILE.items():
                    message = aio_pika.Message(
                        body, headers={"ce-id": name, **headers}, message_id=name
                    )
                    await exchange.publish(message, routing_key="t.x")
            finally:
                sys.setrecursionlimit(limit)
            await exchange.publish(
                aio_pika.Message(
                    mixed_case.to_structured(), content_type="Application/CloudEvents+JSON"
                ),
                routing_key="t.good",
            )
            await exchange.publish(to_message(good), routing_key="t.good")
            wait_for(
                lambda: sorted(read_ids(out)) == sorted([good.id, mixed_case.id]), 30, sink.tail
            )
            await asyncio.sleep(1.0)  # time enough to loop, if it looped
            # the operator's tools read every one of them (they crashed on non-UTF-8 headers)
            listed = esb_cli(esb_env, "dlq", "list", names.queue)
            assert listed.returncode == 0, listed.stderr
            assert f"{names.queue}.dlq: {len(HOSTILE)} parked" in listed.stdout
            shown = esb_cli(esb_env, "dlq", "show", "header_not_utf8", names.queue)
            assert shown.returncode == 0, shown.stderr
            assert "ce-subject: \ufffd\ufffd" in shown.stdout
            # replayed, each comes back and is parked again, nothing lost on the way
            replayed = esb_cli(esb_env, "dlq", "replay", names.queue)
            assert replayed.returncode == 0, replayed.stderr
            assert replayed.stdout.endswith(f"\n{len(HOSTILE)} replayed\n"), replayed.stdout
            for _ in range(150):
                if await queue_depth(amqp_url, names.queue + ".dlq") == len(HOSTILE):
                    break
                await asyncio.sleep(0.2)
            dlq = await channel.declare_queue(names.queue + ".dlq", passive=True)
            parked = {}
            while (message := await dlq.get(fail=False, timeout=5)) is not None:
                parked[str(message.message_id)] = reason_of(message)
                await message.ack()
            work = await channel.declare_queue(names.queue, passive=True)
            assert work.declaration_result.message_count == 0
        # parked again for the same reason; a copy parked without its oversized headers has
        # no attributes left to replay with
        assert parked == {
            name: "missing_attribute" if reason == "headers_too_large" else reason
            for name, (_, _, reason) in HOSTILE.items()
        }
        assert sink.popen.poll() is None, "the sink died on hostile input"
        text = sink.metrics()
        assert metric(
            text, "esb_consumed_total", service="hostile-sink", adapter="jsonl", outcome="parked"
        ) == 2 * len(HOSTILE)  # once as they came, once replayed
        for outcome in ("retried", "rejected", "requeued"):
            assert (
                metric(
                    text,
                    "esb_consumed_total",
                    service="hostile-sink",
                    adapter="jsonl",
                    outcome=outcome,
                )
                == 0
            ), outcome
    finally:
        sink.stop()
