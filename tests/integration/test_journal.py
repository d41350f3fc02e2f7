"""Message tracking on a real RabbitMQ: every hop's record reaches the journal process, and
``esb trace`` prints where each order is: applied, in a retry delay, or parked."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aio_pika
import orjson
from hypothesis import strategies as st

from esb import CloudEvent
from esb.journal import RECORDS, HopRecord
from esb.journal_service import PREFETCH
from esb.topology import QueueNames
from tests.support.hostile_cases import collect
from tests.support.processes import (
    EsbProcess,
    connected_broker,
    esb_cli,
    read_ids,
    routes_dir,
    wait_for,
)

INTEGERS = st.integers(-(2**63), 2**63 - 1)

ROUTES = """\
sinks: {ledger: {}, carrier: {}}
schemas:
  shipment.v1:
    type: object
    required: [email]
routes:
  - name: books
    from: shop.order.paid
    to: ledger
  - name: shipping
    from: shop.order.paid
    steps:
      - map: {keep: true, fields: {reference: data.order_id}}
      - validate: shipment.v1
    to: carrier
"""


def shop_flow(
    env: dict[str, str], routes: Path, tmp_path: Path, **carrier: str
) -> list[EsbProcess]:
    """ROUTES' processes: router, transformer, the ledger (a jsonl sink writing
    ``ledger.jsonl``) and the carrier (an http sink whose target refuses every connection,
    so each delivery is retried), ``carrier`` added to the carrier's environment."""
    return [
        EsbProcess(["run", "router", "--routes", str(routes)], env, tmp_path / "router.log"),
        EsbProcess(["run", "transformer", "--routes", str(routes)], env, tmp_path / "tf.log"),
        EsbProcess(
            ["run", "sink", "jsonl"],
            {
                **env,
                "ESB_SERVICE__NAME": "ledger",
                "ESB_ADAPTER__PATH": str(tmp_path / "ledger.jsonl"),
            },
            tmp_path / "ledger.log",
        ),
        EsbProcess(
            ["run", "sink", "http"],
            {
                **env,
                "ESB_SERVICE__NAME": "carrier",
                "ESB_ADAPTER__URL": "http://127.0.0.1:9/",
                "ESB_IDEMPOTENCY__PATH": str(tmp_path / "carrier.sqlite3"),
                **carrier,
            },
            tmp_path / "carrier.log",
        ),
    ]


def stored(journal: Path) -> int:
    with sqlite3.connect(journal) as db:
        return int(db.execute("SELECT count(*) FROM esb_hops").fetchone()[0])


async def test_trace_shows_each_order_applied_retrying_or_parked(
    routed_env: dict[str, str], tmp_path: Path
) -> None:
    routes = routes_dir(tmp_path, ROUTES)
    journal = tmp_path / "journal.sqlite3"
    env = {
        **routed_env,
        "ESB_JOURNAL__ENABLED": "true",
        "ESB_JOURNAL__KEYS": '["order_id"]',
        "ESB_JOURNAL__PATH": str(journal),
        "ESB_JOURNAL__FLUSH_SECONDS": "0.1",
        "ESB_RETRY__INITIAL_DELAY": "600",
        "ESB_RETRY__MAX_DELAY": "600",
    }
    orders = tmp_path / "orders.jsonl"
    orders.write_text('{"order_id": "SO-1", "email": "ada@example.com"}\n{"order_id": "SO-2"}\n')
    ledger = tmp_path / "ledger.jsonl"
    processes = [
        EsbProcess(["run", "journal"], env, tmp_path / "journal.log"),
        *shop_flow(env, routes, tmp_path),
    ]
    journal_process = processes[0]
    try:
        for process in processes:
            process.wait_ready()
        source = esb_cli(
            {
                **env,
                "ESB_SERVICE__HEALTH_PORT": "0",
                "ESB_SOURCE__CORRELATION_FIELD": "order_id",
                "ESB_ADAPTER__PATH": str(orders),
                "ESB_ADAPTER__EVENT_TYPE": "shop.order.paid",
                "ESB_ADAPTER__EVENT_SOURCE": "urn:shop",
            },
            "run",
            "source",
            "jsonl",
        )
        assert source.returncode == 0, source.stderr
        wait_for(lambda: len(read_ids(ledger)) == 2, 30, processes[3].tail)

        def traced(*args: str) -> str:
            return esb_cli(env, "trace", *args).stdout

        # SO-1: published, routed twice, applied by the ledger, waiting in the carrier's
        # retry delay; SO-2: applied by the ledger, parked by the shipping route's validate.
        wait_for(
            lambda: "in a retry delay" in traced("--key", "order_id=SO-1"), 30, journal_process.tail
        )
        wait_for(lambda: "parked in" in traced("--key", "order_id=SO-2"), 30, journal_process.tail)
        first = traced("--key", "order_id=SO-1")
        names = QueueNames(env["ESB_BROKER__PREFIX"])
        assert first.startswith("order_id SO-1: ")
        assert "correlation SO-1" in first
        assert "jsonl-source (source)  published" in first
        assert "router (router)  routed" in first
        assert f"-> {names.sink('ledger')}, {names.steps('transformer')}" in first
        assert "route books" in first
        assert "route shipping" in first
        assert "now: applied by ledger at " in first
        assert f"now: in a retry delay of {names.sink('carrier')}: attempt 2 at " in first
        assert "ada@example.com" not in first  # ids, keys and timings: never the data

        second = traced("--correlation", "SO-2")
        by_key = traced("--key", "order_id=SO-2").splitlines()
        assert by_key[0] == "order_id SO-2: 5 hop records, correlation SO-2"
        assert second.splitlines() == ["correlation SO-2: 5 hop records", *by_key[1:]]
        parked = [line for line in second.splitlines() if "now: parked in" in line]
        assert len(parked) == 1
        assert f"parked in {names.steps('transformer')}.dlq since " in parked[0]
        assert "permanent: route shipping: step 2: validate shipment.v1" in parked[0]
        assert "'email' is a required property" in parked[0]

        # One event by its id: the copy the router sent down "books" for SO-1.
        copy_id = next(
            line.split()[1]
            for line in first.splitlines()
            if line.strip().startswith("event ") and "route books" in line
        )
        alone = traced(copy_id)
        assert "now: applied by ledger" in alone
        assert "route shipping" not in alone  # only the tree that holds it, down its branch
        missing = esb_cli(env, "trace", "no-such-event")
        assert missing.returncode == 1
        assert "the journal (sqlite) holds nothing of event no-such-event" in missing.stderr
    finally:
        for process in processes:
            process.stop()


async def test_the_journal_refuses_what_is_not_hop_records_and_stores_the_rest(
    routed_env: dict[str, str], tmp_path: Path
) -> None:
    """Anyone who can publish can write to the journal queue: generated garbage is refused
    and counted, the process stays up, and a valid batch after it is stored."""
    journal = tmp_path / "journal.sqlite3"
    env = {**routed_env, "ESB_JOURNAL__PATH": str(journal)}
    process = EsbProcess(["run", "journal"], env, tmp_path / "journal.log")
    valid = [{"event": "e-1", "outcome": "applied", "service": "s", "role": "sink", "at": 1e9}]
    junk = collect(
        st.one_of(
            st.binary(max_size=200),
            st.builds(lambda n: b"[" * n + b"]" * n, st.integers(1, 5000)),
            st.lists(st.dictionaries(st.text(max_size=10), INTEGERS | st.text()), max_size=3).map(
                orjson.dumps
            ),
            st.builds(
                lambda key, value: orjson.dumps([{**valid[0], key: value}]),
                st.sampled_from(["outcome", "at", "event", "outputs", "keys", "extra"]),
                st.text(max_size=300) | INTEGERS | st.lists(INTEGERS, max_size=2),
            ),
        ).filter(lambda body: not _valid(body)),
        40,
        0,
    )
    junk.append(orjson.dumps([{**valid[0], "event": "x" * 300}]))  # over AMQP's 255 bytes
    # One forged record beside a good one: the good one is stored, the forged one refused.
    mixed = orjson.dumps([{**valid[0], "route": "r" * 10_000}, {**valid[0], "event": "e-2"}])
    try:
        process.wait_ready()
        connection = await aio_pika.connect(env["ESB_BROKER__URL"])
        async with connection:
            channel = await connection.channel()
            queue = QueueNames(env["ESB_BROKER__PREFIX"]).journal
            for body in [*junk, mixed, orjson.dumps(valid)]:
                await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
        wait_for(lambda: stored(journal) == 2, 30, process.tail)
        with sqlite3.connect(journal) as db:
            assert sorted(e for (e,) in db.execute("SELECT event FROM esb_hops")) == ["e-1", "e-2"]
        refused = sum(_invalid_records(body) for body in junk) + 1
        metrics = process.metrics()
        line = 'esb_journal_stored_records_total{result="refused",service="journal"}'
        assert f"{line} {refused}.0" in metrics
        assert process.ready()
    finally:
        process.stop()


async def test_many_journal_messages_are_stored_without_waiting_for_the_timer(
    routed_env: dict[str, str], tmp_path: Path
) -> None:
    """Many processes flushing at once: what waits is stored as soon as half the prefetch
    has arrived, so intake is never capped by journal.flush_seconds (60 s here: the timer
    alone would store nothing in the 20 s; fewer than half a prefetch may wait for it)."""
    journal = tmp_path / "journal.sqlite3"
    env = {**routed_env, "ESB_JOURNAL__PATH": str(journal), "ESB_JOURNAL__FLUSH_SECONDS": "60"}
    process = EsbProcess(["run", "journal"], env, tmp_path / "journal.log")
    record = {"outcome": "applied", "service": "s", "role": "sink", "at": 1e9}
    try:
        process.wait_ready()
        connection = await aio_pika.connect(env["ESB_BROKER__URL"])
        async with connection:
            channel = await connection.channel()
            queue = QueueNames(env["ESB_BROKER__PREFIX"]).journal
            for n in range(3 * PREFETCH):
                body = orjson.dumps([{**record, "event": f"e-{n}"}])
                await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
        wait_for(lambda: stored(journal) > 3 * PREFETCH - PREFETCH // 2, 20, process.tail)
    finally:
        process.stop()


def _invalid_records(body: bytes) -> int:
    """Records of a message the journal must refuse: a message that is no list counts one."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 1
    if not isinstance(items, list):
        return 1
    return sum(1 for item in items if not _valid_record(item))


def _valid_record(item: object) -> bool:
    try:
        HopRecord.model_validate(item)
    except ValueError:
        return False
    return True


def _valid(body: bytes) -> bool:
    try:
        RECORDS.validate_json(body)
    except ValueError:
        return False
    return True


async def test_a_journal_that_takes_nothing_never_holds_the_flow(
    routed_env: dict[str, str], tmp_path: Path
) -> None:
    """The journal queue gone (deleted under the running processes): every hop record is
    unroutable and dropped, counted, and every order still reaches its sink."""
    routes = routes_dir(tmp_path, ROUTES)
    env = {**routed_env, "ESB_JOURNAL__ENABLED": "true", "ESB_JOURNAL__FLUSH_SECONDS": "0.1"}
    router, _, ledger, _ = processes = shop_flow(env, routes, tmp_path)
    try:
        for process in processes:
            process.wait_ready()
        connection = await aio_pika.connect(env["ESB_BROKER__URL"])
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(QueueNames(env["ESB_BROKER__PREFIX"]).journal)
        broker = await connected_broker(env)
        for n in range(20):
            await broker.publish(
                CloudEvent.new("shop.order.paid", "urn:shop", {"order_id": f"SO-{n}"})
            )
        await broker.close()
        wait_for(lambda: len(read_ids(tmp_path / "ledger.jsonl")) == 20, 30, ledger.tail)
        dropped = 'esb_journal_records_total{result="dropped",service="router"}'

        def dropped_so_far() -> float:
            lines = [line for line in router.metrics().splitlines() if line.startswith(dropped)]
            return float(lines[0].split()[-1]) if lines else 0.0

        # One record a delivery, flushed in batches: all 20 are dropped, none held anything up.
        wait_for(lambda: dropped_so_far() >= 20, 10, router.tail)
        assert "journal: hop records dropped" in router.log.read_text()
    finally:
        for process in processes:
            process.stop()
