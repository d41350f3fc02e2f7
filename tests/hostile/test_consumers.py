"""Hostile messages against a real router, transformer and jsonl sink on RabbitMQ.

Every message ends exactly once: applied (the sink's file has it), or parked in a
queue's ``.dlq`` with an ``x-esb-reason``. Meanwhile each process answers ``/healthz``
within 100 ms, stays under its memory bound and stops on SIGTERM; afterwards no work
queue holds a message (a delivery left unacknowledged returns to its queue when its
consumer stops, so an empty queue after the stop means nothing was held).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from hypothesis import strategies as st

from esb.amqp_binding import from_message
from esb.errors import EnvelopeError
from esb.limits import DEFAULT_MAX_BODY_BYTES
from esb.parking import REASON, UNROUTED_HEADER
from esb.retry import delay_queue
from esb.slip import HEADER as SLIP
from esb.teardown import delete_deployment
from esb.topology import QueueNames, dlq_name
from tests.support.hostile import (
    CASE_HEADER,
    CONSUMER_RSS_MB,
    Case,
    Expect,
    Ledger,
    Marker,
    Outcome,
    Watcher,
    absent_message_ids,
    run_seed,
    stop_process,
    summarise,
    verdict,
)
from tests.support.hostile_cases import (
    PWNED_STEP,
    MessageRecipe,
    RawText,
    collect,
    forged_slips,
    message_recipes,
    never_pwned,
    worst,
)
from tests.support.processes import EsbProcess

#: Generated cases per consumer kind.
CASES = 2000
SINK = "hostile"
ROUTES = """\
schemas:
  hostile.v1:
    type: object
    properties:
      redos_probe: {type: string, pattern: "^(a+)+$"}
      strict: {type: integer}
sinks:
  hostile: {}
routes:
  - name: hostile-all
    from: "#"
    steps:
      - map: {keep: true, fields: {seen: {const: true}}}
      - validate: hostile.v1
    to: hostile
"""
KINDS = ("router", "transformer", "sink")
#: No new outcome for this long: the rest is stuck; stop waiting and report it.
STALL_SECONDS = 20.0
MAX_WAIT_SECONDS = 150.0


@dataclass
class Deployment:
    """Router, transformer (every step kind) and jsonl sink processes under one prefix."""

    url: str
    base: Path
    prefix: str = field(default_factory=lambda: f"esbt-{uuid.uuid4().hex[:10]}")
    processes: dict[str, EsbProcess] = field(default_factory=dict)
    genuine_slip: str = ""

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.events"

    @property
    def names(self) -> QueueNames:
        return QueueNames(self.prefix)

    @property
    def out(self) -> Path:
        return self.base / "sink.jsonl"

    def queue_of(self, kind: str) -> str:
        return {
            "router": self.names.router,
            "transformer": self.names.steps("transformer"),
            "sink": self.names.sink(SINK),
        }[kind]

    def work_queues(self) -> list[str]:
        steps = [self.names.steps(pool) for pool in ("router", "transformer")]
        return [self.names.router, *steps, self.names.sink(SINK)]

    def parking_lots(self) -> list[str]:
        return [dlq_name(q) for q in self.work_queues()] + [self.names.unrouted]

    async def start(self) -> None:
        routes = self.base / "routes"
        routes.mkdir()
        (routes / "hostile.yaml").write_text(ROUTES)
        env = {
            "ESB_BROKER__URL": self.url,
            "ESB_BROKER__EXCHANGE": self.exchange,
            "ESB_BROKER__PREFIX": self.prefix,
            # Retries are for transient faults; none is expected, so fast ones keep a
            # misclassified input from stretching the run.
            "ESB_RETRY__INITIAL_DELAY": "0.05",
            "ESB_RETRY__MAX_DELAY": "0.2",
            "ESB_SERVICE__SHUTDOWN_GRACE": "3",
        }

        def run(name: str, args: list[str], extra: dict[str, str]) -> EsbProcess:
            process = EsbProcess(args, {**env, **extra}, self.base / f"{name}.log")
            self.processes[name] = process
            return process

        router = run("router", ["run", "router", "--routes", str(routes)], {})
        await asyncio.to_thread(router.wait_ready)
        self.genuine_slip = await self._genuine_slip()
        run("transformer", ["run", "transformer", "--routes", str(routes)], {})
        run(
            "sink",
            ["run", "sink", "jsonl"],
            {"ESB_SERVICE__NAME": SINK, "ESB_ADAPTER__PATH": str(self.out)},
        )
        for process in self.processes.values():
            await asyncio.to_thread(process.wait_ready)

    async def _genuine_slip(self) -> str:
        """The slip the router itself writes, taken off the transformer's queue before it runs."""
        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(self.exchange)
            headers: dict[str, Any] = {
                "ce-specversion": "1.0",
                "ce-id": "slip-probe",
                "ce-source": "urn:hostile",
                "ce-type": "hostile.probe",
            }
            await exchange.publish(
                aio_pika.Message(b"{}", headers=headers, content_type="application/json"),
                routing_key="hostile.probe",
            )
            queue = await channel.declare_queue(self.names.steps("transformer"), passive=True)
            for _ in range(200):
                message = await queue.get(fail=False, no_ack=True)
                if message is not None:
                    slip = message.headers[SLIP]
                    return slip.decode() if isinstance(slip, bytes) else str(slip)
                await asyncio.sleep(0.05)
        raise AssertionError("the router sent nothing to the map transformer's queue")

    async def cleanup(self) -> None:
        for process in self.processes.values():
            process.kill()
        await delete_deployment(self.url, self.prefix, self.exchange, [SINK])


@pytest.fixture
async def deployment(amqp_url: str, tmp_path: Path) -> AsyncIterator[Deployment]:
    deployment = Deployment(amqp_url, tmp_path)
    try:
        await deployment.start()
        yield deployment
    finally:
        await deployment.cleanup()


def message_of(case: Case, tag: str) -> aio_pika.Message:
    """The case as a message, its marker in a header and in ``correlation_id`` (which
    derived events and parked copies keep) unless the case sets one of its own."""
    properties = {"correlation_id": tag, **case.properties}
    return aio_pika.Message(
        case.body,
        headers={**case.headers, CASE_HEADER: tag},
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        **properties,
    )


async def publish(
    deployment: Deployment, kinds: dict[int, str], cases: dict[int, Case], marker: Marker
) -> list[str]:
    """Publish every case with confirms, many in flight; returns the publishes that failed."""
    failures: list[str] = []
    slots = asyncio.Semaphore(128)
    connection = await aio_pika.connect(deployment.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange(deployment.exchange)

        async def one(number: int) -> None:
            case, kind = cases[number], kinds[number]
            async with slots:
                try:
                    message = message_of(case, marker.tag(number))
                    if kind == "router":
                        await events.publish(message, routing_key="hostile.event", timeout=60)
                    else:
                        await channel.default_exchange.publish(
                            message, routing_key=deployment.queue_of(kind), timeout=60
                        )
                except Exception as exc:  # the case itself cannot be sent: a generator fault
                    failures.append(f"case {number} [{case.label}]: {type(exc).__name__}: {exc}")

        with absent_message_ids():
            await asyncio.gather(*(one(number) for number in cases))
    return failures


class Observer:
    """Reads the sink's file and drains the parking lots, tying each outcome to its case."""

    def __init__(self, deployment: Deployment, marker: Marker, ledgers: dict[int, Ledger]) -> None:
        self.deployment = deployment
        self.marker = marker
        self.ledgers = ledgers
        self._offset = 0
        self._partial = b""
        self.count = 0

    def unique_ledgers(self) -> list[Ledger]:
        return list({id(ledger): ledger for ledger in self.ledgers.values()}.values())

    def ledger_of(self, number: int | None) -> Ledger | None:
        return self.ledgers.get(number) if number is not None else None

    def read_sink(self) -> None:
        path = self.deployment.out
        if not path.exists():
            return
        with path.open("rb") as file:
            file.seek(self._offset)
            chunk = file.read()
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                next(iter(self.ledgers.values())).unknown.append(
                    f"unreadable sink line {line[:80]!r}"
                )
                continue
            data = doc.get("data")
            number = self.marker.find(
                doc.get("id"),
                doc.get("correlationid"),
                doc.get("causationid"),
                data.get("case") if isinstance(data, dict) else None,
            )
            ledger = self.ledger_of(number)
            if ledger is None or number is None:
                next(iter(self.ledgers.values())).unknown.append(
                    f"sink line { ({k: v for k, v in doc.items() if k != 'data'}) }"
                )
                continue
            case = ledger.cases[number]
            fault = never_pwned(doc) or (case.check_applied(doc) if case.check_applied else None)
            ledger.record(number, Outcome("applied", "sink", fault=fault))
            self.count += 1

    async def drain(self, channel: AbstractChannel) -> None:
        for name in self.deployment.parking_lots():
            queue = await channel.declare_queue(name, passive=True)
            while (message := await queue.get(fail=False, no_ack=True)) is not None:
                self.parked(name, message)

    def parked(self, queue: str, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        number = self.marker.find(
            headers.get(CASE_HEADER),
            headers.get("ce-id"),
            headers.get("ce-correlationid"),
            message.message_id,
            message.correlation_id,
            message.body[:200],
        )
        ledger = self.ledger_of(number)
        if ledger is None or number is None:
            next(iter(self.ledgers.values())).unknown.append(
                f"parked in {queue}: {str(headers)[:200]}"
            )
            return
        reason = headers.get(REASON) or headers.get(UNROUTED_HEADER)
        if reason is None and len(message.body) > DEFAULT_MAX_BODY_BYTES:
            # Too large to copy: the consumer rejected it and the broker dead-lettered it whole.
            death = headers.get("x-first-death-reason")
            reason = f"too_large (dead-lettered: {death})" if death == "rejected" else None
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        case = ledger.cases[number]
        properties = {"message_id": message.message_id, "message": message}
        fault = case.check_parked(headers, properties) if case.check_parked else None
        ledger.record(number, Outcome("parked", queue, str(reason) if reason else None, fault))
        self.count += 1

    async def wait(self, total: int) -> None:
        """Until every case has an outcome (then 2 s more, for doubles) or progress stalls."""
        connection = await aio_pika.connect(self.deployment.url)
        async with connection:
            channel = await connection.channel()
            started = last_progress = time.monotonic()
            seen, done_at = -1, None
            while time.monotonic() - started < MAX_WAIT_SECONDS:
                self.read_sink()
                await self.drain(channel)
                now = time.monotonic()
                if self.count != seen:
                    seen, last_progress = self.count, now
                settled = sum(len(ledger.outcomes) for ledger in self.unique_ledgers())
                if settled >= total:
                    done_at = done_at or now
                    if now - done_at > 2.0:
                        return
                elif now - last_progress > STALL_SECONDS:
                    return
                await asyncio.sleep(0.2)

    async def leftovers(self) -> list[str]:
        """Messages still in a work or delay queue once every consumer has stopped."""
        found = []
        connection = await aio_pika.connect(self.deployment.url)
        async with connection:
            channel = await connection.channel()
            for work in self.deployment.work_queues():
                for name in (work, *(delay_queue(work, n) for n in range(1, 6))):
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                    except aio_pika.exceptions.ChannelNotFoundEntity:
                        channel = await connection.channel()
                        continue
                    left = queue.declaration_result.message_count
                    if not left:
                        continue
                    found.append(f"{left} messages left in {name}")
                    while (message := await queue.get(fail=False, no_ack=True)) is not None:
                        headers = dict(message.headers or {})
                        number = self.marker.find(
                            headers.get(CASE_HEADER),
                            headers.get("ce-id"),
                            headers.get("ce-correlationid"),
                            message.message_id,
                        )
                        ledger = self.ledger_of(number)
                        if ledger is not None and number is not None:
                            ledger.leftover[number] = name
        return found


async def run_cases(
    deployment: Deployment, marker: Marker, by_kind: dict[str, list[Case]], seed: int | None
) -> None:
    """Publish, observe, stop, and judge: the one procedure of both tests below."""
    started = time.monotonic()
    ledgers: dict[str, Ledger] = {}
    numbered: dict[int, Ledger] = {}
    kinds: dict[int, str] = {}
    cases: dict[int, Case] = {}
    for kind, kind_cases in by_kind.items():
        ledger = Ledger(
            f"{kind} ({'generated' if seed is not None else 'corpus'})",
            {c.number: c for c in kind_cases},
        )
        ledgers[kind] = ledger
        for case in kind_cases:
            numbered[case.number] = ledger
            kinds[case.number] = kind
            cases[case.number] = case
    watcher = Watcher(deployment.processes, deployment.base / "watch.json")
    observer = Observer(deployment, marker, numbered)
    try:
        unsent = await publish(deployment, kinds, cases, marker)
        await observer.wait(len(cases))
    finally:
        watched = watcher.stop()
    stopped = {name: stop_process(name, process) for name, process in deployment.processes.items()}
    left = await observer.leftovers()
    observer.read_sink()
    for kind, ledger in ledgers.items():
        process = "sink" if kind == "sink" else kind
        if fault := stopped.get(process):
            ledger.process_faults.append(fault)
        ledger.process_faults.extend(
            Watcher.faults(
                {process: watched[process], "control": watched["control"]}, CONSUMER_RSS_MB
            )
            if process in watched
            else []
        )
        ledger.process_faults.extend(left if kind == "router" else [])
        if unsent and kind == "router":
            ledger.process_faults.append(
                f"{len(unsent)} cases could not be published: {unsent[:3]}"
            )
    elapsed = time.monotonic() - started
    for ledger in ledgers.values():
        print(summarise(ledger, elapsed, seed))
    print(Watcher.describe(watched))
    verdict(ledgers.values())


def generated(marker: Marker, seed: int, genuine_slip: str) -> dict[str, list[Case]]:
    """2,000 cases per consumer kind; transformer cases carry a genuine slip or a forged one."""
    slips = st.tuples(st.integers(0, 4), forged_slips(genuine_slip))
    recipes = collect(
        st.tuples(message_recipes(), message_recipes(), message_recipes(), slips), CASES, seed
    )
    by_kind: dict[str, list[Case]] = {kind: [] for kind in KINDS}
    for index, (for_router, for_transformer, for_sink, (pick, forged)) in enumerate(recipes):
        for offset, (kind, recipe) in enumerate(
            (("router", for_router), ("transformer", for_transformer), ("sink", for_sink))
        ):
            number = index * 3 + offset
            case = case_of(number, marker, recipe)
            if kind == "transformer":
                if pick == 0:
                    label, slip, expect = forged
                    case.headers[SLIP] = slip
                    case.label = f"{label} / {case.label}"
                    case.expect = worst(case.expect, expect)
                else:
                    case.headers[SLIP] = genuine_slip
            by_kind[kind].append(case)
    return by_kind


def case_of(number: int, marker: Marker, recipe: MessageRecipe) -> Case:
    label, expect, body, headers, properties = recipe.build(marker.tag(number))
    return Case(number, label, expect, body, dict(headers), dict(properties))


async def test_generated_messages_to_router_transformer_and_sink_each_end_once(
    deployment: Deployment,
) -> None:
    """2,000 generated messages per consumer kind: each applied or parked with its reason, once."""
    seed = run_seed()
    print(f"hostile consumer cases: seed {seed} (ESB_HOSTILE_SEED={seed} repeats them)")
    marker = Marker(uuid.uuid4().hex[:8])
    by_kind = generated(marker, seed, deployment.genuine_slip)
    assert all(len(cases) >= CASES for cases in by_kind.values())
    await run_cases(deployment, marker, by_kind, seed)


# --- the fixed corpus: the inputs issue #9 saw break esb ----------------------------------------


def ce(tag: str, **extra: Any) -> dict[str, Any]:
    return {
        "ce-specversion": "1.0",
        "ce-id": f"{tag}-id",
        "ce-source": "urn:hostile",
        "ce-type": "hostile.event",
        **extra,
    }


def json_props() -> dict[str, Any]:
    return {"content_type": "application/json"}


def flag_is_true(line: dict[str, Any]) -> str | None:
    return (
        None if line.get("flag") is True else f"boolean extension arrived as {line.get('flag')!r}"
    )


def no_invented_id(headers: Any, properties: dict[str, Any]) -> str | None:
    """The parked copy stays without an id: a replay cannot make it an event (#9.13)."""
    try:
        event = from_message(properties["message"])
    except EnvelopeError as exc:
        return None if exc.field == "id" else f"parked copy refused for {exc}, not its id"
    return f"the parked copy reads as an event with the invented id {event.id!r}"


@dataclass
class Fixed:
    """One corpus input: how to build it and what each consumer kind must do with it."""

    label: str
    build: Any  # (tag) -> (body, headers, properties)
    expect: dict[str, Expect]
    check_applied: Any = None
    check_parked: Any = None


def deep(tag: str, depth: int, duplicate: bool = False) -> bytes:
    opener = b'{"a":1,"a":' if duplicate else b'{"a":'
    return b'{"case":"' + tag.encode() + b'","n":' + opener * depth + b"1" + b"}" * depth + b"}"


def corpus() -> list[Fixed]:
    reject_all: dict[str, Expect] = {"router": "reject", "transformer": "reject", "sink": "reject"}
    apply_all: dict[str, Expect] = {"router": "apply", "transformer": "apply", "sink": "apply"}
    steps_refuse: dict[str, Expect] = {"router": "reject", "transformer": "reject", "sink": "apply"}
    text = ("ada@example.com 4111 1111 1111 1111 " * 2000)[:65_536]
    return [
        Fixed(
            "1,000-deep JSON with duplicate keys (#9.2)",
            lambda t: (deep(t, 1000, True), ce(t), json_props()),
            reject_all,
        ),
        Fixed(
            "non-UTF-8 bytes in a ce- header (#9.2)",
            lambda t: (b"{}", ce(t, **{"ce-subject": RawText(b"\xff\xfe")}), json_props()),
            reject_all,
        ),
        Fixed("JSON 255 deep (#9.3)", lambda t: (deep(t, 255), ce(t), json_props()), reject_all),
        Fixed("JSON 1,024 deep (#9.3)", lambda t: (deep(t, 1022), ce(t), json_props()), reject_all),
        Fixed(
            "an id of 300 bytes (#9.3)",
            lambda t: (b"{}", ce(t, **{"ce-id": f"{t}-" + "i" * 300}), json_props()),
            reject_all,
        ),
        Fixed(
            "a type of 300 bytes (#9.3)",
            lambda t: (b"{}", ce(t, **{"ce-type": "hostile." + "t" * 300}), json_props()),
            reject_all,
        ),
        Fixed(
            "a 192 kB body with a duplicate key (#9.4)",
            lambda t: (
                b'{"case":"'
                + t.encode()
                + b'","d":1,"note":"'
                + b"ada@example.com " * 12_000
                + b'","d":2}',
                ce(t),
                json_props(),
            ),
            reject_all,
        ),
        Fixed(
            "64 kB of text failing validation, masked in the log (#9.4)",
            lambda t: (
                orjson.dumps({"case": t, "strict": "not an integer", "note": text}),
                ce(t),
                json_props(),
            ),
            steps_refuse,
        ),
        Fixed(
            "a JSON Schema pattern against 28 characters (#9.5)",
            lambda t: (orjson.dumps({"redos_probe": "a" * 28 + "!"}), ce(t), json_props()),
            steps_refuse,
        ),
        Fixed(
            "a JSON Schema pattern against 50,000 characters (#9.5)",
            lambda t: (orjson.dumps({"redos_probe": "a" * 50_000 + "!"}), ce(t), json_props()),
            steps_refuse,
        ),
        Fixed(
            "a forged slip naming steps no route declares (#9.6)",
            lambda t: (
                b'{"ok": true}',
                ce(
                    t,
                    **{
                        SLIP: orjson.dumps(
                            {
                                "route": "no-such-route",
                                "steps": [PWNED_STEP],
                                "to": [SINK],
                                "position": 1,
                            }
                        ).decode()
                    },
                ),
                json_props(),
            ),
            {"transformer": "reject"},
        ),
        Fixed(
            "a 40 MB body (#9.8)",
            lambda t: (
                b'{"case":"' + t.encode() + b'","blob":"' + b"x" * 40_000_000 + b'"}',
                ce(t),
                json_props(),
            ),
            {"router": "reject", "sink": "reject"},
        ),
        Fixed(
            "an integer of 2^64 (#9.13)",
            lambda t: (b'{"n":18446744073709551616}', ce(t), json_props()),
            reject_all,
        ),
        Fixed(
            "a boolean extension (#9.13)",
            lambda t: (b"{}", ce(t, **{"ce-flag": True}), json_props()),
            apply_all,
            check_applied=flag_is_true,
        ),
        Fixed(
            "structured mode as Application/CloudEvents+JSON (#9.13)",
            lambda t: (
                orjson.dumps(
                    {
                        "specversion": "1.0",
                        "id": f"{t}-id",
                        "source": "urn:hostile",
                        "type": "hostile.event",
                        "data": {"ok": True},
                    }
                ),
                {},
                {"content_type": "Application/CloudEvents+JSON"},
            ),
            apply_all,
        ),
        Fixed(
            "a message without any id (#9.13)",
            lambda t: (b"{}", {k: v for k, v in ce(t).items() if k != "ce-id"}, json_props()),
            reject_all,
            check_parked=no_invented_id,
        ),
    ]


async def test_the_inputs_issue_9_saw_break_esb_each_end_once(deployment: Deployment) -> None:
    """The fixed corpus of issue #9, sent to each consumer kind it concerns."""
    marker = Marker(uuid.uuid4().hex[:8])
    by_kind: dict[str, list[Case]] = {kind: [] for kind in KINDS}
    number = 0
    for fixed in corpus():
        for kind, expect in fixed.expect.items():
            body, headers, properties = fixed.build(marker.tag(number))
            headers = dict(headers)
            if kind == "transformer":
                headers.setdefault(SLIP, deployment.genuine_slip)
            by_kind[kind].append(
                Case(
                    number,
                    fixed.label,
                    expect,
                    body,
                    headers,
                    properties,
                    check_applied=fixed.check_applied,
                    check_parked=fixed.check_parked,
                )
            )
            number += 1
    await run_cases(deployment, marker, by_kind, None)
