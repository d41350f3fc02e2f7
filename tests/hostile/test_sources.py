"""Hostile input at each source's own edge: webhooks, MQTT, files, JSON lines, SQL rows, REST.

Every input ends exactly once: published to the events exchange (and then decodable by
every consumer under the default limits, so what a source accepts no consumer parks), or
refused with a reason (an HTTP 4xx with a body, a file moved to ``error/`` with its
``.reason.txt``, or a count in ``esb_source_refused_total``). Meanwhile the source answers
``/healthz`` within 100 ms of having a core, stays under its memory bound and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage
from hypothesis import strategies as st

from adapters.files.source import reason_file_name
from adapters.mqtt.topics import event_type
from esb.amqp_binding import from_message
from esb.errors import EnvelopeError
from esb.limits import DEFAULT_MAX_BODY_BYTES, SHORT_STRING_BYTES
from esb.testing import free_port
from tests.adapters.mqtt.conftest import HOW_TO_START, Mqtt
from tests.support.hostile import (
    Case,
    Expect,
    Ledger,
    Marker,
    Outcome,
    Watcher,
    metric_total,
    run_seed,
    stop_process,
    summarise,
    verdict,
)
from tests.support.hostile_api import (
    EVENT_TYPE,
    TOKEN,
    Origins,
    PollCase,
    ScriptedApi,
    link_refusals,
    poll_recipes,
)
from tests.support.hostile_cases import BodyRecipe, body_recipes, collect, wide_chars, worst
from tests.support.processes import EsbProcess
from tests.support.rabbit import port_open

#: Generated inputs per source.
CASES = 2000
STALL_SECONDS = 20.0
MQTT_STEP = 400
MAX_WAIT_SECONDS = 150.0


@dataclass
class Published:
    """One event the source published, as the bus saw it."""

    number: int | None
    event_id: str
    fault: str | None


@dataclass
class Bus:
    """A queue bound to every routing key of the source's exchange, read as events arrive."""

    url: str
    marker: Marker
    prefix: str = field(default_factory=lambda: f"esbt-{uuid.uuid4().hex[:10]}")
    seen: list[Published] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.events"

    def env(self, service: str) -> dict[str, str]:
        return {
            "ESB_BROKER__URL": self.url,
            "ESB_BROKER__EXCHANGE": self.exchange,
            "ESB_SERVICE__NAME": service,
            "ESB_SERVICE__SHUTDOWN_GRACE": "3",
        }

    async def start(self) -> None:
        self.connection = await aio_pika.connect(self.url)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")
        await queue.consume(self._take, no_ack=True)

    async def close(self) -> None:
        channel = await self.connection.channel()
        await channel.exchange_delete(self.exchange)
        await self.connection.close()

    async def _take(self, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        fault = None
        case = None
        try:
            event = from_message(message, DEFAULT_MAX_BODY_BYTES)
            event_id = event.id
            data = event.data
            case = data.get("case") if isinstance(data, dict) else None
        except EnvelopeError as exc:
            event_id = str(headers.get("ce-id", message.message_id))
            fault = f"published an event every consumer parks ({exc.code}: {str(exc)[:120]})"
        except Exception as exc:
            event_id = str(headers.get("ce-id", message.message_id))
            fault = f"published an event consumers cannot decode ({type(exc).__name__}: {exc})"
        number = self.ids.get(event_id)
        if number is None:
            number = self.marker.find(
                case, headers.get("ce-id"), headers.get("ce-subject"), message.body[:300]
            )
        self.seen.append(Published(number, event_id, fault))

    def record_into(self, ledger: Ledger) -> None:
        for published in self.seen:
            ledger.record(published.number, Outcome("applied", "bus", fault=published.fault))


async def settle(
    count: Callable[[], Awaitable[int]],
    total: int,
    alive: Callable[[], bool],
    quiet: float = 2.0,
) -> None:
    """Until ``count`` reaches ``total`` (then ``quiet`` s more), stops moving, or the process
    dies."""
    started = last_move = time.monotonic()
    seen, done_at = -1, None
    while time.monotonic() - started < MAX_WAIT_SECONDS and alive():
        now = time.monotonic()
        current = await count()
        if current != seen:
            seen, last_move = current, now
        if current >= total:
            done_at = done_at or now
            if now - done_at >= quiet:
                return
        elif now - last_move > STALL_SECONDS:
            return
        await asyncio.sleep(0.2)


async def until_started(process: EsbProcess, within: float = 30.0) -> None:
    """Until the process is ready, or has exited (its end is judged with the outcomes)."""
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(process.ready):
        if process.popen.poll() is not None:
            return
        assert time.monotonic() < deadline, f"not ready within {within} s:\n{process.tail()}"
        await asyncio.sleep(0.05)


def refused_total(process: EsbProcess) -> int:
    """``esb_source_refused_total`` over every reason; -1 once the process answers no more."""
    try:
        return int(metric_total(process.metrics(), "esb_source_refused_total"))
    except OSError:
        return -1


@pytest.fixture
async def bus(amqp_url: str) -> AsyncIterator[Bus]:
    bus = Bus(amqp_url, Marker(uuid.uuid4().hex[:8]))
    await bus.start()
    yield bus
    await bus.close()


async def finish(
    name: str,
    ledger: Ledger,
    process: EsbProcess,
    watcher: Watcher,
    started: float,
    seed: int,
    may_finish: bool = False,
) -> None:
    watched = watcher.stop()
    if fault := stop_process(name, process, may_finish=may_finish):
        ledger.process_faults.append(fault)
    ledger.process_faults.extend(Watcher.faults(watched))
    print(summarise(ledger, time.monotonic() - started, seed))
    print(Watcher.describe(watched))
    verdict([ledger])


def body_case(number: int, tag: str, recipe: BodyRecipe, label: str = "") -> Case:
    body = recipe.build(tag)
    return Case(number, f"{label}{body.label}", body.expect, body.raw)


def one_word_levels(topic: str) -> bool:
    """Whether every level can be one word of the event type (tests/adapters/mqtt covers the
    rule itself): a level holding ".", "*", "#" or a space would add words or wildcards."""
    try:
        event_type("mqtt.{topic}", topic)
    except EnvelopeError as exc:
        return "not one word" not in str(exc)
    return True


# --- webhook ----------------------------------------------------------------------------------


async def post(port: int, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
    """One POST over a raw socket: header values go as the bytes given, UTF-8 or not.

    HTTP clients (aiohttp's among them) send only text header values; a hostile sender
    does not. The answer is read to the end (``Connection: close``): (status, body), or
    (0, what happened) when none came.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [b"POST /webhook HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    head.append(b"Content-Length: %d" % len(body))
    head.extend(name + b": " + value for name, value in headers)
    received = bytearray()

    async def read_answer() -> None:
        # Read while still sending: a server that answers (400, 413) before the body ends
        # closes with unread data, and the reset would discard an answer not yet read.
        while chunk := await reader.read(65536):
            received.extend(chunk)

    reading = asyncio.create_task(read_answer())
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n")
        for start in range(0, len(body), 1 << 20):
            writer.write(body[start : start + (1 << 20)])
            await writer.drain()
    except ConnectionError:
        pass  # answered before the whole body was sent: the answer is read meanwhile
    try:
        await asyncio.wait_for(reading, timeout=30)
    except (ConnectionError, TimeoutError) as exc:
        if not received:
            return 0, f"no answer: {type(exc).__name__}".encode()
    finally:
        writer.close()
    answer = bytes(received)
    status_line, _, rest = answer.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return 0, b"not an HTTP answer: " + answer[:100]
    return int(parts[1]), rest.partition(b"\r\n\r\n")[2]


@dataclass(frozen=True)
class HttpRecipe:
    """Headers of a webhook request around a body recipe."""

    family: str
    size: int = 0
    payload: Any = None

    def build(self, tag: str, body: bytes) -> tuple[str, Expect, list[tuple[bytes, bytes]], bytes]:
        plain = [(b"Content-Type", b"application/json"), (b"X-Event-Type", b"hostile.web")]
        ce = [
            (b"ce-specversion", b"1.0"),
            (b"ce-id", tag.encode() + b"-id"),
            (b"ce-source", b"urn:hostile"),
            (b"ce-type", b"hostile.web"),
            (b"Content-Type", b"application/json"),
        ]
        match self.family:
            case "plain":
                return "plain JSON", "apply", plain, body
            case "binary":
                return "CloudEvents binary mode", "apply", ce, body
            case "structured":
                doc: dict[str, Any] = {"specversion": "1.0", "id": f"{tag}-id"}
                doc |= {"source": "urn:hostile"}
                doc |= {"type": "hostile.web", "data": {"case": tag}}
                return (
                    f"structured mode as {self.payload!r}",
                    "apply",
                    [(b"Content-Type", self.payload.encode())],
                    orjson.dumps(doc),
                )
            case "type_header":
                value = self.payload * self.size
                headers = [
                    (b"Content-Type", b"application/json"),
                    (b"X-Event-Type", value.encode()),
                ]
                size = len(value.replace("/", ".").encode())
                expect: Expect = "reject" if size > SHORT_STRING_BYTES or not value else "any"
                return f"X-Event-Type of {size} bytes", expect, headers, body
            case "delivery_id":
                value = f"{tag}-{self.payload * self.size}".encode()
                expect = "reject" if len(value) > SHORT_STRING_BYTES else "any"
                return (
                    f"delivery id of {len(value)} bytes",
                    expect,
                    [*plain, (b"X-Delivery", value)],
                    body,
                )
            case "raw_bytes":
                name = [b"ce-id", b"ce-source", b"ce-type", b"X-Event-Type", b"X-Delivery"][
                    self.size % 5
                ]
                value = tag.encode() + b"\xff\xfe" + self.payload
                headers = [(k, value if k == name else v) for k, v in ce if k != name]
                headers.append((name, value))
                return f"non-UTF-8 bytes in {name.decode()}", "any", headers, body
            case "many":
                headers = [*plain, *((f"X-Junk-{i}".encode(), b"v") for i in range(self.size))]
                return f"{self.size} extra headers", "any", headers, body
            case "big_header":
                return (
                    f"a header of {self.size} bytes",
                    "any",
                    [*plain, (b"X-Junk", b"v" * self.size)],
                    body,
                )
            case "content_type":
                return (
                    f"content type {self.payload!r}",
                    "any",
                    [(b"Content-Type", self.payload)],
                    body,
                )
        raise AssertionError(self.family)


def http_recipes() -> st.SearchStrategy[HttpRecipe]:
    return st.one_of(
        st.builds(HttpRecipe, st.just("plain")),
        st.builds(HttpRecipe, st.just("plain")),
        st.builds(HttpRecipe, st.just("binary")),
        st.builds(HttpRecipe, st.just("binary")),
        st.builds(
            HttpRecipe,
            st.just("structured"),
            payload=st.sampled_from(
                [
                    "application/cloudevents+json",
                    "Application/CloudEvents+JSON",
                    "application/cloudevents+json; charset=UTF-8",
                ]
            ),
        ),
        st.builds(
            HttpRecipe,
            st.just("type_header"),
            size=st.integers(0, 400),
            payload=wide_chars | st.just("a/b"),
        ),
        st.builds(HttpRecipe, st.just("delivery_id"), size=st.integers(1, 400), payload=wide_chars),
        st.builds(
            HttpRecipe, st.just("raw_bytes"), size=st.integers(0, 4), payload=st.binary(max_size=8)
        ),
        st.builds(HttpRecipe, st.just("many"), size=st.integers(1, 300)),
        st.builds(HttpRecipe, st.just("big_header"), size=st.integers(1, 20_000)),
        st.builds(HttpRecipe, st.just("content_type"), payload=st.binary(min_size=0, max_size=40)),
    )


def webhook_corpus(tag: str) -> list[tuple[str, Expect, list[tuple[bytes, bytes]], bytes]]:
    """The issue's inputs at the HTTP edge."""
    plain = [(b"Content-Type", b"application/json"), (b"X-Event-Type", b"hostile.web")]
    head = b'{"case":"' + tag.encode() + b'",'
    deep = head + b'"n":' + b'{"a":1,"a":' * 1000 + b"1" + b"}" * 1000 + b"}"
    return [
        ("1,000-deep JSON with duplicate keys (#9.2)", "reject", plain, deep),
        (
            "a non-UTF-8 ce- header (#9.2)",
            "reject",
            [
                (b"ce-specversion", b"1.0"),
                (b"ce-id", tag.encode() + b"\xff"),
                (b"ce-source", b"urn:h"),
                (b"ce-type", b"h.t"),
            ],
            b"{}",
        ),
        ("JSON 300 deep (#9.3)", "reject", plain, head + b'"n":' + b"[" * 300 + b"]" * 300 + b"}"),
        (
            "a ce-id of 300 bytes (#9.3)",
            "reject",
            [
                (b"ce-specversion", b"1.0"),
                (b"ce-id", tag.encode() + b"i" * 300),
                (b"ce-source", b"urn:h"),
                (b"ce-type", b"h.t"),
                (b"Content-Type", b"application/json"),
            ],
            b"{}",
        ),
        (
            "a 192 kB body with a duplicate key (#9.4)",
            "reject",
            plain,
            head + b'"d":1,"note":"' + b"ada@example.com " * 12_000 + b'","d":2}',
        ),
        ("a 40 MB body (#9.8)", "reject", plain, head + b'"blob":"' + b"x" * 40_000_000 + b'"}'),
        ("an integer of 2^64 (#9.13)", "reject", plain, head + b'"n":18446744073709551616}'),
        (
            "Application/CloudEvents+JSON (#9.13)",
            "apply",
            [(b"Content-Type", b"Application/CloudEvents+JSON")],
            orjson.dumps(
                {"specversion": "1.0", "id": f"{tag}-id", "source": "urn:h", "type": "h.t"}
            ),
        ),
        (
            "a / in the type header (#9.13)",
            "apply",
            [(b"Content-Type", b"application/json"), (b"X-Event-Type", b"orders/paid")],
            head[:-1] + b"}",
        ),
    ]


async def test_webhook_answers_every_request_with_202_or_a_4xx_reason(
    bus: Bus, tmp_path: Path
) -> None:
    """2,000 generated requests and the corpus: 202 then published once, or a 4xx with a reason."""
    seed = run_seed()
    port = free_port()
    env = {
        **bus.env("hostile-webhook"),
        "ESB_ADAPTER__PORT": str(port),
        "ESB_ADAPTER__EVENT_TYPE_HEADER": "X-Event-Type",
        "ESB_ADAPTER__TYPE_PREFIX": "",
        "ESB_ADAPTER__ID_HEADER": "X-Delivery",
    }
    process = EsbProcess(["run", "source", "http-webhook"], env, tmp_path / "webhook.log")
    await until_started(process)
    started = time.monotonic()
    requests: dict[int, tuple[list[tuple[bytes, bytes]], bytes]] = {}
    cases: dict[int, Case] = {}
    for offset in range(len(webhook_corpus(""))):
        number = CASES + offset
        label, expect, headers, body = webhook_corpus(bus.marker.tag(number))[offset]
        cases[number] = Case(number, label, expect, body, extra={"headers": headers})
        requests[number] = (headers, body)
    for number, (body_recipe, http_recipe) in enumerate(
        collect(st.tuples(body_recipes(), http_recipes()), CASES, seed)
    ):
        tag = bus.marker.tag(number)
        built = body_recipe.build(tag)
        label, expect, headers, raw = http_recipe.build(tag, built.raw)
        body_expect: Expect = built.expect if raw is built.raw else "apply"
        if http_recipe.family == "content_type":
            body_expect = "any"
        cases[number] = Case(
            number,
            f"{label} / {built.label}",
            worst(body_expect, expect),
            raw,
            extra={"headers": headers},
        )
        requests[number] = (headers, raw)
    ledger = Ledger("webhook source", cases)
    watcher = Watcher({"webhook": process}, tmp_path / "watch.json")
    answers: dict[int, tuple[int, bytes]] = {}
    slots = asyncio.Semaphore(16)

    async def send(number: int) -> None:
        async with slots:
            answers[number] = await post(port, *requests[number])

    try:
        await asyncio.gather(*(send(number) for number in requests))
        accepted = 0
        for number, (status, text) in answers.items():
            if status == 202:
                accepted += 1
                bus.ids[str(orjson.loads(text)["id"])] = number
        # Events already seen before their 202 was read: tie them to their case now.
        for published in bus.seen:
            published.number = bus.ids.get(published.event_id, published.number)

        async def arrived() -> int:
            return len(bus.seen)

        await settle(arrived, accepted, lambda: process.popen.poll() is None)
    finally:
        counted = refused_total(process)
    bus.record_into(ledger)
    json_refusals = 0
    for number, (status, text) in answers.items():
        if status == 202:
            if number not in ledger.outcomes:
                fault = "answered 202 but never published"
                ledger.record(number, Outcome("applied", "bus", fault=fault))
            continue
        if 400 <= status < 500 and text.strip():
            try:
                reason = str(orjson.loads(text)["error"])
                json_refusals += 1
            except (orjson.JSONDecodeError, KeyError, TypeError):
                reason = text[:100].decode("utf-8", "replace")  # refused by the HTTP parser
            ledger.record(number, Outcome("refused", "http", reason))
        else:
            fault = f"answered {status} {text[:100]!r}"
            ledger.record(number, Outcome("refused", "http", None, fault))
    if counted != json_refusals:
        ledger.process_faults.append(
            f"{json_refusals} requests refused with a JSON reason, but "
            f"esb_source_refused_total counts {counted}"
        )
    await finish("webhook", ledger, process, watcher, started, seed)


# --- MQTT -------------------------------------------------------------------------------------


@pytest.fixture
def mqtt_broker() -> Mqtt:
    host, _, port = os.environ.get("ESB_TEST_MQTT", "127.0.0.1:1883").rpartition(":")
    if not port_open(host, int(port)):
        pytest.fail(HOW_TO_START.format(host=host, port=port))
    return Mqtt(host, int(port))


def _mqtt_may_carry(char: str) -> bool:
    """Mosquitto disconnects a publisher whose topic holds a control character or a
    noncharacter (the MQTT spec rules them out), so no source ever sees one."""
    code = ord(char)
    return not (0x7F <= code <= 0x9F or 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE)


topic_levels = st.text(
    st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters="+#").filter(
        _mqtt_may_carry
    ),
    max_size=300,
)


async def test_mqtt_source_publishes_or_counts_every_message_refused(
    bus: Bus, mqtt_broker: Mqtt, tmp_path: Path
) -> None:
    """2,000 generated MQTT messages (payloads and topic levels) and the corpus, each once."""
    seed = run_seed()
    topic = f"esbt/{uuid.uuid4().hex[:10]}"
    client_id = f"esbt-{uuid.uuid4().hex[:10]}"
    env = {
        **bus.env("hostile-mqtt"),
        "ESB_ADAPTER__HOST": mqtt_broker.host,
        "ESB_ADAPTER__PORT": str(mqtt_broker.port),
        "ESB_ADAPTER__CLIENT_ID": client_id,
        "ESB_ADAPTER__TOPICS": f'["{topic}/#"]',
        "ESB_ADAPTER__EVENT_TYPE": "mqtt.{topic}",
        "ESB_ADAPTER__ID_FIELD": "case",
    }
    process = EsbProcess(["run", "source", "mqtt"], env, tmp_path / "mqtt.log")
    try:
        await until_started(process)
        started = time.monotonic()
        cases: dict[int, Case] = {}
        messages: list[tuple[str, bytes]] = []
        for number, (recipe, level) in enumerate(
            collect(st.tuples(body_recipes(), topic_levels), CASES, seed)
        ):
            tag = bus.marker.tag(number)
            case = body_case(number, tag, recipe)
            name = f"{topic}/{tag}/{level}"
            size = len(("mqtt." + name.replace("/", ".")).encode())
            if size > SHORT_STRING_BYTES or not one_word_levels(name):
                case.expect = "reject"
            elif "/" in level or not level:
                case.expect = worst(case.expect, "any")
            case.label = f"topic of {size} bytes / {case.label}"
            case.extra["topic"] = name
            cases[number] = case
            messages.append((name, case.body))
        for offset, (label, expect, level, payload) in enumerate(mqtt_corpus()):
            number = CASES + offset
            tag = bus.marker.tag(number)
            body = payload.replace(b"TAG", tag.encode())
            cases[number] = Case(number, label, expect, body, extra={"topic": level})
            messages.append((f"{topic}/{tag}/{level}", body))
        ledger = Ledger("mqtt source", cases, counts_refusals=True)
        watcher = Watcher({"mqtt": process}, tmp_path / "watch.json")

        async def settled() -> int:
            return len({p.number for p in bus.seen}) + max(refused_total(process), 0)

        # Mosquitto keeps at most 1,000 messages queued for a session (max_queued_messages)
        # and drops the rest: publish in steps the source keeps up with.
        for start in range(0, len(messages), MQTT_STEP):
            await settle(settled, start - MQTT_STEP, lambda: process.popen.poll() is None, 0)
            await asyncio.to_thread(mqtt_broker.publish, messages[start : start + MQTT_STEP])
        await settle(settled, len(cases), lambda: process.popen.poll() is None)
        ledger.refused_count = max(refused_total(process), 0)
        bus.record_into(ledger)
        await finish("mqtt", ledger, process, watcher, started, seed)
    finally:
        process.kill()
        await asyncio.to_thread(mqtt_broker.forget_session, client_id)


def mqtt_corpus() -> list[tuple[str, Expect, str, bytes]]:
    """The issue's MQTT inputs; TAG in a payload becomes the case's marker."""
    deep = b'{"case":"TAG","n":' + b'{"a":1,"a":' * 1000 + b"1" + b"}" * 1000 + b"}"
    return [
        ("1,000-deep JSON with duplicate keys (#9.2)", "reject", "deep", deep),
        (
            "JSON 300 deep (#9.3)",
            "reject",
            "deep300",
            b'{"case":"TAG","n":' + b"[" * 300 + b"]" * 300 + b"}",
        ),
        ("a topic making a type over 255 bytes (#9.3)", "reject", "t" * 300, b'{"case":"TAG"}'),
        (
            "an id field of 300 bytes (#9.3)",
            "reject",
            "longid",
            b'{"case":"TAG' + b"i" * 300 + b'"}',
        ),
        (
            "a 192 kB payload with a duplicate key (#9.4)",
            "reject",
            "dup",
            b'{"case":"TAG","d":1,"note":"' + b"ada@example.com " * 12_000 + b'","d":2}',
        ),
        (
            "an integer of 2^64 (#9.13)",
            "reject",
            "bigint",
            b'{"case":"TAG","n":18446744073709551616}',
        ),
    ]


# --- dropped files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRecipe:
    """A dropped file: its kind, a name suffix and the rows' body recipes."""

    kind: str
    suffix: Any
    rows: list[BodyRecipe]


def file_recipes() -> st.SearchStrategy[FileRecipe]:
    names = (
        st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), max_size=60)
        | st.binary(max_size=20).map(lambda b: b.replace(b"/", b"_").replace(b"\x00", b"_"))
        | st.integers(180, 240).map(lambda n: "n" * n)
    )
    rows = st.lists(body_recipes(huge=False), min_size=1, max_size=3)
    kinds = st.sampled_from(["file"] * 12 + ["symlink", "fifo", "empty", "huge_line"])
    return st.builds(FileRecipe, kinds, names, rows)


def line_of(raw: bytes) -> bytes:
    return raw.replace(b"\n", b" ").replace(b"\r", b" ")


async def test_files_source_moves_every_file_to_done_or_error_with_a_reason(
    bus: Bus, tmp_path: Path
) -> None:
    """2,000 generated dropped files, links and FIFOs among them: published whole, or refused."""
    seed = run_seed()
    inbox, staging, outside = tmp_path / "in", tmp_path / "staging", tmp_path / "outside"
    for directory in (inbox, staging, outside):
        directory.mkdir()
    secret = outside / "secret.jsonl"
    secret.write_bytes(b'{"secret": "must not be published"}\n')
    cases: dict[int, Case] = {}
    for number, recipe in enumerate(collect(file_recipes(), CASES, seed)):
        tag = bus.marker.tag(number)
        suffix = recipe.suffix if isinstance(recipe.suffix, bytes) else recipe.suffix.encode()
        name = (tag.encode() + b"-" + suffix)[:249] + b".jsonl"  # NAME_MAX: 255 bytes
        bodies = [row.build(tag) for row in recipe.rows]
        content = b"\n".join(line_of(b.raw) for b in bodies) + b"\n"
        expect = worst(*(b.expect for b in bodies))
        if any(not line_of(b.raw).strip() for b in bodies):
            expect = worst(expect, "any")  # a blank line is no row
        if len(name) + 3 > SHORT_STRING_BYTES:
            expect = worst(expect, "any")
        try:
            name.decode()
        except UnicodeDecodeError:
            expect = worst(expect, "any")
        label = f"a {recipe.kind} of {len(recipe.rows)} rows: " + " + ".join(
            b.label for b in bodies
        )
        target = os.path.join(os.fsencode(inbox), name)
        match recipe.kind:
            case "symlink":
                os.symlink(secret, target)
                expect, label = "reject", "a symbolic link to a file outside (#9.10)"
            case "fifo":
                os.mkfifo(target)
                expect, label = "reject", "a FIFO"
            case "empty":
                content, expect, label = b"", "any", "an empty file"
            case "huge_line":
                content = b'{"case":"' + tag.encode() + b'","blob":"' + b"x" * 3_000_000 + b'"}\n'
                expect, label = "reject", "a line of 3 MB"
        if recipe.kind in ("file", "empty", "huge_line"):
            staged = os.path.join(os.fsencode(staging), name)
            Path(os.fsdecode(staged)).write_bytes(content)
            os.rename(staged, target)
        rows = sum(1 for line in content.splitlines() if line.strip())  # blank: no row
        cases[number] = Case(
            number, label, expect, content[:2000], extra={"name": name, "rows": rows}
        )
    process = EsbProcess(
        ["run", "source", "files"],
        {
            **bus.env("hostile-files"),
            "ESB_ADAPTER__DIRECTORY": str(inbox),
            "ESB_ADAPTER__PATTERN": "*.jsonl",
            "ESB_ADAPTER__FORMAT": "jsonl",
            "ESB_ADAPTER__EVENT_TYPE": "files.hostile",
            "ESB_ADAPTER__SETTLE_SECONDS": "0",
            "ESB_ADAPTER__POLL_SECONDS": "0.2",
        },
        tmp_path / "files.log",
    )
    started = time.monotonic()
    try:
        await until_started(process)
        watcher = Watcher({"files": process}, tmp_path / "watch.json")

        async def handled() -> int:
            return CASES - sum(
                1 for entry in os.scandir(inbox) if not entry.is_dir(follow_symlinks=False)
            )

        await settle(handled, CASES, lambda: process.popen.poll() is None)
        ledger = Ledger("files source", cases)
        by_file: dict[int, Counter[str]] = defaultdict(Counter)
        for published in bus.seen:
            if published.number is None:
                ledger.unknown.append(f"event {published.event_id[:80]}")
                continue
            by_file[published.number][published.event_id] += 1
            if published.fault:
                ledger.record(published.number, Outcome("applied", "bus", fault=published.fault))
        done = {os.fsencode(e.name) for e in os.scandir(os.fsencode(inbox / "done"))}
        error = {e.name for e in os.scandir(os.fsencode(inbox / "error"))}
        left = {
            e.name for e in os.scandir(os.fsencode(inbox)) if not e.is_dir(follow_symlinks=False)
        }
        for number, case in cases.items():
            name = case.extra["name"]
            events = by_file.get(number, Counter())
            if name in error:
                reason_file = os.fsencode(reason_file_name(os.fsdecode(name)))
                why = (
                    b""
                    if reason_file not in error
                    else (inbox / "error" / os.fsdecode(reason_file)).read_bytes()
                )
                ledger.record(
                    number,
                    Outcome(
                        "refused",
                        "error/",
                        why.decode("utf-8", "replace")[:200] or None,
                        None if why else "moved to error/ without a .reason.txt",
                    ),
                )
            if events:
                doubled = [i for i, n in events.items() if n > 1]
                rows = sum(1 for line in case.body.splitlines() if line.strip())  # blank: no row
                fault = None
                if doubled:
                    fault = f"rows published twice: {doubled[:2]}"
                elif name not in done:
                    fault = "rows published but the file not moved to done/"
                elif len(events) != rows:
                    fault = f"{len(events)} of {rows} rows published"
                if not any(o.kind == "applied" for o in ledger.outcomes.get(number, [])):
                    ledger.record(number, Outcome("applied", "bus", fault=fault))
            elif name in done:
                ledger.record(
                    number,
                    Outcome(
                        "applied",
                        "done/",
                        fault="moved to done/ with no event published"
                        if case.body.strip()
                        else None,
                    ),
                )
            if name in left:
                ledger.leftover[number] = "the drop directory"
        await finish("files", ledger, process, watcher, started, seed)
    finally:
        process.kill()


# --- JSON lines on standard input -------------------------------------------------------------


def refusals_logged(process: EsbProcess) -> int:
    """Refusals a source logged (one structured line each): its count once it has exited."""
    count = 0
    for line in process.log.read_bytes().splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and "refused an input" in str(record.get("msg", "")):
            count += 1
    return count


def refusals(process: EsbProcess) -> int:
    """esb_source_refused_total while the process runs; its log's count after it ended."""
    counted = refused_total(process) if process.popen.poll() is None else -1
    return counted if counted >= 0 else refusals_logged(process)


def jsonl_line(tag: str, recipe: BodyRecipe, structured: bool) -> tuple[str, Expect, bytes]:
    body = recipe.build(tag)
    if structured and body.expect == "apply":
        doc = {
            "specversion": "1.0",
            "id": f"{tag}-id",
            "source": "urn:h",
            "type": "h.t",
            "data": orjson.loads(body.raw),
        }
        return f"a structured event / {body.label}", "apply", orjson.dumps(doc)
    line = line_of(body.raw)
    expect = body.expect
    if not line.strip() or b'"case":' not in line:
        expect = worst(expect, "any")  # a blank line is no input; no id field, no event
    return body.label, expect, line


async def test_jsonl_source_publishes_or_counts_every_line_refused(
    bus: Bus, tmp_path: Path
) -> None:
    """2,000 generated lines in a file: each published once or counted refused, then exit 0."""
    seed = run_seed()
    cases: dict[int, Case] = {}
    lines = []
    for number, (recipe, structured) in enumerate(
        collect(st.tuples(body_recipes(), st.integers(0, 5).map(lambda n: n == 0)), CASES, seed)
    ):
        label, expect, line = jsonl_line(bus.marker.tag(number), recipe, structured)
        if not line.strip():
            line, expect = b"{}", "any"  # every case is one line the source reads
        cases[number] = Case(number, label, expect, line)
        lines.append(line)
    source = tmp_path / "input.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    process = EsbProcess(
        ["run", "source", "jsonl"],
        {
            **bus.env("hostile-jsonl"),
            "ESB_ADAPTER__PATH": str(source),
            "ESB_ADAPTER__EVENT_TYPE": "jsonl.hostile",
            "ESB_ADAPTER__ID_FIELD": "case",
        },
        tmp_path / "jsonl.log",
    )
    started = time.monotonic()
    watcher = Watcher({"jsonl": process}, tmp_path / "watch.json")
    try:
        ledger = Ledger("jsonl source", cases, counts_refusals=True)

        async def settled() -> int:
            return len({p.number for p in bus.seen}) + refusals(process)

        await settle(settled, len(cases), lambda: True)
        ledger.refused_count = refusals(process)
        bus.record_into(ledger)
        await finish("jsonl", ledger, process, watcher, started, seed, may_finish=True)
    finally:
        process.kill()


# --- SQL rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowRecipe:
    kind: str
    payload: Any = None


def row_recipes() -> st.SearchStrategy[RowRecipe]:
    return st.one_of(
        st.builds(RowRecipe, st.just("text"), st.text(max_size=200)),
        st.builds(RowRecipe, st.just("text"), st.text(max_size=200)),
        st.builds(
            RowRecipe, st.just("long_text"), st.sampled_from([5_000, 300_000, 1_200_000, 2_500_000])
        ),
        st.builds(RowRecipe, st.just("non_utf8"), st.binary(min_size=1, max_size=40)),
        st.builds(RowRecipe, st.just("blob"), st.binary(max_size=200)),
        st.builds(RowRecipe, st.just("integer"), st.integers(-(2**63), 2**63 - 1)),
        st.builds(RowRecipe, st.just("real"), st.floats(allow_nan=False)),
        st.builds(RowRecipe, st.just("null")),
        st.builds(RowRecipe, st.just("json_text"), st.integers(1, 1100)),
    )


async def test_sql_source_publishes_or_counts_every_row_refused(bus: Bus, tmp_path: Path) -> None:
    """2,000 generated rows with hostile column values in SQLite: each published or refused."""
    seed = run_seed()
    database = tmp_path / "legacy.db"
    cases: dict[int, Case] = {}
    with sqlite3.connect(database) as db:
        db.execute('CREATE TABLE hostile (id INTEGER PRIMARY KEY, seq INTEGER, "case" TEXT, note)')
        for number, recipe in enumerate(collect(row_recipes(), CASES, seed), start=1):
            tag = bus.marker.tag(number)
            expect: Expect = "apply"
            value: Any = recipe.payload
            sql_value = "?"
            match recipe.kind:
                case "long_text":
                    value = "x" * recipe.payload
                    expect = "apply" if recipe.payload < 900_000 else "any"
                case "non_utf8":
                    value, sql_value, expect = b"\xff" + recipe.payload, "CAST(? AS TEXT)", "any"
                case "json_text":
                    value = "[" * recipe.payload + "]" * recipe.payload
                case "null":
                    value = None
            db.execute(
                f'INSERT INTO hostile (id, seq, "case", note) VALUES (?, ?, ?, {sql_value})',
                (number, number, tag, value),
            )
            shown = value[:60] if isinstance(value, str | bytes) else value
            cases[number] = Case(number, f"a {recipe.kind} value", expect, extra={"note": shown})
    process = EsbProcess(
        ["run", "source", "sql"],
        {
            **bus.env("hostile-sql"),
            "ESB_ADAPTER__DSN": f"sqlite:///{database}",
            "ESB_ADAPTER__TABLE": "hostile",
            "ESB_ADAPTER__ID_COLUMN": "id",
            "ESB_ADAPTER__CURSOR_COLUMN": "seq",
            "ESB_ADAPTER__CURSOR_FILE": str(tmp_path / "cursor.json"),
            "ESB_ADAPTER__EVENT_TYPE": "sql.hostile",
            "ESB_ADAPTER__POLL_SECONDS": "0.2",
        },
        tmp_path / "sql.log",
    )
    try:
        await until_started(process)
        started = time.monotonic()
        ledger = Ledger("sql source", cases, counts_refusals=True)
        watcher = Watcher({"sql": process}, tmp_path / "watch.json")

        async def settled() -> int:
            return len({p.number for p in bus.seen}) + max(refused_total(process), 0)

        await settle(settled, len(cases), lambda: process.popen.poll() is None)
        ledger.refused_count = max(refused_total(process), 0)
        bus.record_into(ledger)
        await finish("sql", ledger, process, watcher, started, seed)
    finally:
        process.kill()


# --- a polled REST API ------------------------------------------------------------------------


@pytest.fixture
async def apis() -> AsyncIterator[tuple[ScriptedApi, ScriptedApi]]:
    """The API the source polls and another origin its links and redirects point at."""
    api, other = ScriptedApi(), ScriptedApi()
    await api.start()
    await other.start()
    yield api, other
    await api.close()
    await other.close()


def retry_after_faults(api: ScriptedApi, cases: list[PollCase], cap: float) -> list[str]:
    """After a failed answer the source asks again: within ``cap`` (the longest Retry-After
    honoured) and its backoff, and not before a Retry-After of at least ``cap`` in seconds."""
    answers = [answer for case in cases for answer in case.answers]
    faults = []
    for asked, then in zip(api.requests, api.requests[1:], strict=False):
        if asked.answer is None:
            break
        answer = answers[asked.answer]
        if answer.status < 300 and not answer.stall:
            continue
        gap = then.at - asked.at
        if gap > cap + POLL_TIMEOUT + 3.0:
            faults.append(f"asked again {gap:.1f} s after {answer.describe()}")
        honoured = answer.status in (429, 503) and (answer.retry_after or "").strip().isdigit()
        if honoured and float(answer.retry_after or 0) >= cap and gap < cap * 0.9:
            faults.append(f"asked again after {gap:.2f} s, before {answer.describe()}")
    return faults[:5]


POLL_TIMEOUT = 1.0


@pytest.mark.parametrize("link_header", [False, True], ids=["next_field", "link_header"])
async def test_http_poll_source_publishes_or_counts_every_page_and_item_refused(
    bus: Bus, apis: tuple[ScriptedApi, ScriptedApi], tmp_path: Path, link_header: bool
) -> None:
    """500 generated answers per pagination style (1,000 in all): each page published once
    or refused and counted, each failed answer survived and asked again after, each next link
    and redirect to another origin or with credentials not followed."""
    seed = run_seed()
    api, other = apis
    max_page_bytes, cap = 3_000_000, 0.2
    at = Origins(api.base, other.base, link_header, max_page_bytes)
    built = [
        recipe.build(bus.marker.tag(number), number, at)
        for number, recipe in enumerate(collect(poll_recipes(link_header), CASES // 4, seed))
    ]
    api.script = [answer for case in built for answer in case.answers]
    cases = {
        number: Case(
            number,
            case.label,
            case.expect,
            case.answers[-1].body[:2000],
            extra={"before": [a.describe() for a in case.answers[:-1]], "next": case.link_text},
        )
        for number, case in enumerate(built)
    }
    pagination = {"ESB_ADAPTER__LINK_HEADER": "true"} if link_header else {}
    if not link_header:
        pagination["ESB_ADAPTER__NEXT_FIELD"] = "links.next"
    process = EsbProcess(
        ["run", "source", "http-poll"],
        {
            **bus.env("hostile-http-poll"),
            "ESB_ADAPTER__URL": f"{api.base}/contacts",
            "ESB_ADAPTER__AUTH": orjson.dumps({"kind": "bearer", "token": TOKEN}).decode(),
            "ESB_ADAPTER__ITEMS_FIELD": "data",
            "ESB_ADAPTER__SINCE_PARAM": "since",
            "ESB_ADAPTER__CURSOR_FIELD": "seq",
            "ESB_ADAPTER__EVENT_TYPE": EVENT_TYPE,
            "ESB_ADAPTER__CURSOR_FILE": str(tmp_path / "cursor.json"),
            "ESB_ADAPTER__POLL_SECONDS": "0.02",
            "ESB_ADAPTER__BACKOFF_SECONDS": "0.01",
            "ESB_ADAPTER__BACKOFF_MAX_SECONDS": "0.05",
            "ESB_ADAPTER__RETRY_AFTER_MAX_SECONDS": str(cap),
            "ESB_ADAPTER__TIMEOUT": str(POLL_TIMEOUT),
            "ESB_ADAPTER__MAX_PAGE_BYTES": str(max_page_bytes),
            **pagination,
        },
        tmp_path / "http-poll.log",
    )
    try:
        await until_started(process)
        started = time.monotonic()
        ledger = Ledger("http-poll source", cases, counts_refusals=True)
        # Off the event loop, which serves the API: a blocked loop would time the source out.
        watcher = await asyncio.to_thread(Watcher, {"http-poll": process}, tmp_path / "watch.json")

        async def scrape() -> str:
            try:
                return await asyncio.to_thread(process.metrics)
            except OSError:
                return ""

        def page_refusals(text: str) -> int:
            """Refused pages and items: every refusal but of next links."""
            total = metric_total(text, "esb_source_refused_total")
            links = metric_total(text, "esb_source_refused_total", reason="invalid_link")
            return int(total - links)

        async def settled() -> int:
            if api.served() < len(api.script):
                return api.served() // 2  # moving, never done before the script is
            return len({p.number for p in bus.seen}) + page_refusals(await scrape())

        await settle(settled, len(cases), lambda: process.popen.poll() is None)
        metrics = await scrape()
        ledger.refused_count = page_refusals(metrics)
        bus.record_into(ledger)
        if api.served() < len(api.script):
            ledger.process_faults.append(
                f"stopped asking after {api.served()} of {len(api.script)} answers"
            )
        links = metric_total(metrics, "esb_source_refused_total", reason="invalid_link")
        must, may = link_refusals(built)
        if not must <= links <= may:
            ledger.process_faults.append(
                f"{links:.0f} next links refused; between {must} and {may} must be"
            )
        failed = metric_total(
            metrics, "esb_adapter_operations_total", operation="poll", result="failed"
        )
        failures = sum(len(case.answers) - 1 for case in built)
        if failed != failures:
            ledger.process_faults.append(f"{failed:.0f} failed polls for {failures} failed answers")
        ledger.process_faults.extend(retry_after_faults(api, built, cap))
        if other.requests:
            first = other.requests[0]
            ledger.process_faults.append(
                f"another origin was asked {len(other.requests)} times, e.g. "
                f"{first.path[:80]} with Authorization {first.authorization!r}"
            )
        wrong = [r for r in api.requests if r.authorization != f"Bearer {TOKEN}"]
        if wrong:
            ledger.process_faults.append(
                f"{len(wrong)} requests without the configured credentials, e.g. "
                f"{wrong[0].path[:80]}: {wrong[0].authorization!r}"
            )
        if b"Traceback" in process.log.read_bytes():
            ledger.process_faults.append(f"a traceback in the log:\n{process.tail()[-1500:]}")
        await finish("http-poll", ledger, process, watcher, started, seed)
    finally:
        process.kill()
