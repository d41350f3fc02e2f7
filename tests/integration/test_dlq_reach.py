"""``esb dlq`` reaches every parking lot, unrouted events included, shows a parked message
masked and readable, and parked headers agree with each other."""

from __future__ import annotations

import signal
from pathlib import Path

import aio_pika
import orjson

from esb import CloudEvent
from esb.amqp_binding import to_message
from esb.topology import QueueNames, dlq_name
from tests.conftest import Names
from tests.support.processes import EsbProcess, connected_broker, esb_cli, read_ids, wait_for

CONTACTS = """\
sinks: {crm: {}}
routes:
  - {name: contacts, from: crm.contact.*, to: crm}
"""
WITH_DEALS = CONTACTS + "  - {name: deals, from: crm.deal.*, to: crm}\n"


async def test_unrouted_events_are_listed_shown_and_replayed_to_the_router_after_a_fix(
    routed_env: dict[str, str], tmp_path: Path
) -> None:
    env = routed_env
    names = QueueNames(env["ESB_BROKER__PREFIX"])
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "r.yaml").write_text(CONTACTS)
    out = tmp_path / "crm.jsonl"
    router = EsbProcess(["run", "router", "--routes", str(routes)], env, tmp_path / "router.log")
    sink = EsbProcess(
        ["run", "sink", "jsonl"],
        {**env, "ESB_SERVICE__NAME": "crm", "ESB_ADAPTER__PATH": str(out)},
        tmp_path / "sink.log",
    )
    try:
        router.wait_ready()
        sink.wait_ready()
        broker = await connected_broker(env)
        await broker.publish(CloudEvent.new("crm.deal.created", "urn:crm", {"n": 1}, id="deal-1"))
        await broker.close()
        lot = names.unrouted
        wait_for(
            lambda: f"{lot}: 1 parked" in esb_cli(env, "dlq", "list", lot).stdout, 20, router.tail
        )
        listed = esb_cli(env, "dlq", "list", lot).stdout
        assert "deal-1  crm.deal.created  reason=unrouted  attempts=1" in listed
        shown = esb_cli(env, "dlq", "show", "deal-1", lot).stdout
        assert f"  x-esb-original-queue: {names.router}\n" in shown
        assert f"  x-esb-original-exchange: {env['ESB_BROKER__EXCHANGE']}\n" in shown
        assert "  x-esb-original-routing-key: crm.deal.created\n" in shown

        (routes / "r.yaml").write_text(WITH_DEALS)
        router.signal(signal.SIGHUP)
        wait_for(lambda: "routes reloaded" in router.log.read_text(), 10, router.tail)
        replay = esb_cli(env, "dlq", "replay", lot)
        assert replay.returncode == 0, replay.stderr
        replayed = f"replayed deal-1 from {lot} to {names.router}"
        assert replay.stdout.splitlines() == [replayed, "1 replayed"]
        wait_for(lambda: len(read_ids(out)) == 1, 20, sink.tail)
        assert orjson.loads(out.read_bytes())["causationid"] == "deal-1"  # the deals route's copy
        assert f"{lot}: 0 parked" in esb_cli(env, "dlq", "list", lot).stdout
    finally:
        router.stop()
        sink.stop()


async def test_list_without_arguments_lists_every_parking_lot_of_the_prefix(
    routed_env: dict[str, str], tmp_path: Path
) -> None:
    """With routes/ in the working directory its sinks' lots too; without, the prefix's own
    lots; and one line says what could not be searched."""
    env = routed_env
    names = QueueNames(env["ESB_BROKER__PREFIX"])
    deployment = tmp_path / "deployment"
    (deployment / "routes").mkdir(parents=True)
    (deployment / "routes" / "r.yaml").write_text(CONTACTS)
    declared = esb_cli(env, "topology", "declare", "--routes", "routes", cwd=deployment)
    assert declared.returncode == 0, declared.stderr
    connection = await aio_pika.connect(env["ESB_BROKER__URL"])
    async with connection:
        channel = await connection.channel()
        for queue, event_id in ((dlq_name(names.sink("crm")), "c-1"), (names.unrouted, "u-1")):
            event = CloudEvent.new("crm.contact.created", "urn:crm", {}, id=event_id)
            await channel.default_exchange.publish(to_message(event), routing_key=queue)

    listed = esb_cli(env, "dlq", "list", cwd=deployment)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert f"{dlq_name(names.sink('crm'))}: 1 parked" in lines
    assert f"{names.unrouted}: 1 parked" in lines
    assert f"{dlq_name(names.router)}: 0 parked" in lines
    assert "not declared" not in listed.stdout
    assert lines[-1].startswith("not searched: parking lots of queues that routes/ does not name")

    elsewhere = esb_cli(env, "dlq", "list", cwd=tmp_path)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert f"{names.unrouted}: 1 parked" in elsewhere.stdout
    assert dlq_name(names.sink("crm")) not in elsewhere.stdout
    assert "give --routes DIR" in elsewhere.stdout.splitlines()[-1]


async def test_show_masks_personal_data_and_indents_the_event_unless_unmasked(
    esb_env: dict[str, str], names: Names
) -> None:
    lot = dlq_name(names.queue)
    data = {"email": "ann@example.com", "note": "card 4111 1111 1111 1111", "total": 5}
    event = CloudEvent.new("shop.order.paid", "urn:shop", data, id="o-1", subject="ann@example.com")
    connection = await aio_pika.connect(esb_env["ESB_BROKER__URL"])
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(lot, durable=True, arguments={"x-queue-type": "quorum"})
        await channel.default_exchange.publish(to_message(event), routing_key=lot)

    shown = esb_cli(esb_env, "dlq", "show", "o-1", names.queue)
    assert shown.returncode == 0, shown.stderr
    assert "ann@example.com" not in shown.stdout
    assert "4111" not in shown.stdout
    assert "  ce-subject: ***\n" in shown.stdout
    event_lines = shown.stdout.split("event:\n", 1)[1]
    assert orjson.loads(event_lines)["data"] == {"email": "***", "note": "card ***", "total": 5}
    assert '\n  "data": {\n    "email": "***",\n' in event_lines

    clear = esb_cli(esb_env, "dlq", "show", "o-1", names.queue, "--unmasked")
    assert clear.returncode == 0, clear.stderr
    assert orjson.loads(clear.stdout.split("event:\n", 1)[1])["data"] == data
    assert "  ce-subject: ann@example.com\n" in clear.stdout


async def test_parked_headers_agree_and_say_where_the_message_came_from(
    esb_env: dict[str, str], names: Names, tmp_path: Path
) -> None:
    """A message a hop sent straight to the queue (the default exchange) is parked with that
    exchange named, one attempt, and the parking lot's own delivery count explained."""
    env = {**esb_env, "ESB_ADAPTER__PATH": str(tmp_path / "out.jsonl")}
    sink = EsbProcess(["run", "sink", "jsonl"], env, tmp_path / "sink.log")
    lot = dlq_name(names.queue)
    try:
        sink.wait_ready()
        connection = await aio_pika.connect(esb_env["ESB_BROKER__URL"])
        async with connection:
            channel = await connection.channel()
            headers = {"ce-id": "no-type", "ce-source": "urn:x", "ce-specversion": "1.0"}
            message = aio_pika.Message(b"{}", headers=headers, message_id="no-type")
            await channel.default_exchange.publish(message, routing_key=names.queue)
        wait_for(
            lambda: f"{lot}: 1 parked" in esb_cli(env, "dlq", "list", names.queue).stdout,
            20,
            sink.tail,
        )
        listed = esb_cli(env, "dlq", "list", names.queue).stdout
        assert "reason=missing_attribute  attempts=1" in listed
        shown = esb_cli(env, "dlq", "show", "no-type", names.queue).stdout
        assert "  x-esb-attempts: 1\n" in shown
        assert "  x-esb-original-exchange: amq.default\n" in shown
        assert f"  x-esb-original-routing-key: {names.queue}\n" in shown
        assert f"  x-esb-original-queue: {names.queue}\n" in shown
        count = next(line for line in shown.splitlines() if "x-delivery-count" in line)
        assert count.startswith("  x-delivery-count: 2  (RabbitMQ's count of this parking lot")
        assert "esb's attempts are x-esb-attempts" in count
    finally:
        sink.stop()
