"""A permanently invalid message is parked at once, at the step that failed; after the fix,
replay resumes there and applies it once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import aio_pika
import orjson
from pamqp.commands import Basic

from esb import CloudEvent
from esb.retry import delay_queue
from esb.topology import QueueNames, dlq_name
from tests.conftest import Names
from tests.support.processes import EsbProcess, connected_broker, esb_cli, read_ids, wait_for
from tests.support.raw_amqp import publish_raw

STRICT = """\
sinks: {crm: {}}
schemas:
  contact.v1:
    type: object
    required: [email]
    properties: {email: {type: string}}
routes:
  - name: contacts
    from: crm.contact.*
    steps:
      - map: {keep: true, fields: {source: '"crm"'}}
      - convert: [{field: since, date: {from: "%d.%m.%Y"}}]
      - validate: contact.v1
    to: crm
"""
FIXED = STRICT.replace("required: [email]", "required: [name]")


def listed(env: dict[str, str], lot: str) -> str:
    return esb_cli(env, "dlq", "list", lot).stdout


async def test_parked_at_once_then_replayed_exactly_once_after_the_fix(
    routed_env: dict[str, str], tmp_path: Path
) -> None:
    env = routed_env
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "r.yaml").write_text(STRICT)
    out = tmp_path / "crm.jsonl"
    names = QueueNames(env["ESB_BROKER__PREFIX"])
    processes = [
        EsbProcess(["run", "router", "--routes", str(routes)], env, tmp_path / "router.log"),
        EsbProcess(["run", "transformer", "--routes", str(routes)], env, tmp_path / "tf.log"),
        EsbProcess(
            ["run", "sink", "jsonl"],
            {**env, "ESB_SERVICE__NAME": "crm", "ESB_ADAPTER__PATH": str(out)},
            tmp_path / "sink.log",
        ),
    ]
    _, transformer, sink = processes
    try:
        for process in processes:
            process.wait_ready()
        broker = await connected_broker(env)
        for n in range(20):
            await broker.publish(
                CloudEvent.new(
                    "crm.contact.created",
                    "urn:crm",
                    {"name": f"c{n}", "email": f"c{n}@example.com", "since": "02.01.2026"},
                )
            )
        bad = CloudEvent.new(
            "crm.contact.created", "urn:crm", {"name": "no mail", "since": "02.01.2026"}, id="bad-1"
        )
        await broker.publish(bad)
        await broker.close()

        wait_for(lambda: len(read_ids(out)) == 20, 30, sink.tail)
        lot = dlq_name(names.steps("transformer"))
        wait_for(
            lambda: f"{lot}: 1 parked" in esb_cli(env, "dlq", "list", lot).stdout,
            10,
            transformer.tail,
        )
        listing = esb_cli(env, "dlq", "list", lot).stdout
        assert "reason=permanent  attempts=1" in listing
        parked_id = listing.splitlines()[1].split()[0]
        shown = esb_cli(env, "dlq", "show", parked_id, names.steps("transformer"))
        # the map and the convert ran in the same hop; the event waits at the step that failed
        assert "x-esb-error: route contacts: step 3: validate contact.v1:" in shown.stdout
        assert "'email' is a required property" in shown.stdout
        assert '"position":3' in shown.stdout
        assert '"since": "2026-01-02"' in shown.stdout
        assert '"source": "crm"' in shown.stdout
        # one hop per event for all three steps: 20 applied, 1 handed back to step 3, parked
        counted = transformer.metrics()
        for outcome, count in (("ok", 21), ("parked", 1)):
            line = f'esb_consumed_total{{adapter="transformer",outcome="{outcome}",'
            assert f'{line}service="transformer"}} {count}.0' in counted
        assert "x-esb-original-queue: " + names.steps("transformer") in shown.stdout
        channel_check = await _depth(
            env["ESB_BROKER__URL"], delay_queue(names.steps("transformer"), 1)
        )
        assert channel_check == 0, "a permanent failure must not be retried"

        (routes / "r.yaml").write_text(FIXED)
        transformer.signal(signal.SIGHUP)
        wait_for(lambda: "routes reloaded" in transformer.log.read_text(), 10, transformer.tail)
        replay = esb_cli(env, "dlq", "replay", lot)
        assert replay.returncode == 0, replay.stderr
        assert replay.stdout.splitlines()[-1] == "1 replayed"
        wait_for(lambda: len(read_ids(out)) == 21, 30, sink.tail)

        again = esb_cli(env, "dlq", "replay", lot)
        assert again.stdout.splitlines()[-1] == "0 replayed"
        ids = read_ids(out)
        assert len(ids) == len(set(ids)) == 21
    finally:
        for process in processes:
            process.stop()


async def test_a_router_step_that_fails_is_parked_on_its_own_and_replayed_after_the_fix(
    routed_env: dict[str, str], tmp_path: Path
) -> None:
    """Steps in the router: the failing copy waits in the router's own steps lot, the other
    route's copy is delivered, and the fixed route (SIGHUP) applies to the replay."""
    env = routed_env
    routes = tmp_path / "routes"
    routes.mkdir()
    in_router = STRICT.replace("    steps:\n", "    runs_in: router\n    steps:\n")
    audit = "  - {name: audit, from: crm.contact.*, to: ledger}\n"
    (routes / "r.yaml").write_text(
        in_router.replace("sinks: {crm: {}}", "sinks: {crm: {}, ledger: {}}") + audit
    )
    out, ledger = tmp_path / "crm.jsonl", tmp_path / "ledger.jsonl"
    names = QueueNames(env["ESB_BROKER__PREFIX"])
    router = EsbProcess(["run", "router", "--routes", str(routes)], env, tmp_path / "router.log")
    sinks = [
        EsbProcess(
            ["run", "sink", "jsonl"],
            {**env, "ESB_SERVICE__NAME": name, "ESB_ADAPTER__PATH": str(path)},
            tmp_path / f"{name}.log",
        )
        for name, path in (("crm", out), ("ledger", ledger))
    ]
    try:
        for process in (router, *sinks):
            process.wait_ready()
        broker = await connected_broker(env)
        await broker.publish(
            CloudEvent.new(
                "crm.contact.created", "urn:crm", {"name": "n", "since": "02.01.2026"}, id="bad-1"
            )
        )
        await broker.close()
        lot = dlq_name(names.steps("router"))
        wait_for(lambda: f"{lot}: 1 parked" in listed(env, lot), 20, router.tail)
        wait_for(lambda: len(read_ids(ledger)) == 1, 20, sinks[1].tail)
        parked_id = listed(env, lot).splitlines()[1].split()[0]
        shown = esb_cli(env, "dlq", "show", parked_id, names.steps("router")).stdout
        assert "x-esb-error: route contacts: step 3: validate contact.v1:" in shown
        assert '"since": "2026-01-02"' in shown  # steps 1 and 2 ran in the router

        (routes / "r.yaml").write_text(
            in_router.replace("required: [email]", "required: [name]").replace(
                "sinks: {crm: {}}", "sinks: {crm: {}, ledger: {}}"
            )
            + audit
        )
        router.signal(signal.SIGHUP)
        wait_for(lambda: "routes reloaded" in router.log.read_text(), 10, router.tail)
        assert esb_cli(env, "dlq", "replay", lot).stdout.splitlines()[-1] == "1 replayed"
        wait_for(lambda: len(read_ids(out)) == 1, 20, sinks[0].tail)
        assert [orjson.loads(line)["data"]["since"] for line in out.read_bytes().splitlines()] == [
            "2026-01-02"
        ]
    finally:
        for process in (router, *sinks):
            process.stop()


async def _depth(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


def test_a_message_without_id_stays_invalid_through_park_and_replay(
    esb_env: dict[str, str], names: Names, amqp_url: str, tmp_path: Path
) -> None:
    """A foreign publisher's message with no id at all is parked; aio-pika gives the parked copy
    a message_id, which must not make the replayed message a valid event."""
    out = tmp_path / "out.jsonl"
    env = {**esb_env, "ESB_ADAPTER__PATH": str(out), "ESB_SERVICE__NAME": "no-id-sink"}
    sink = EsbProcess(["run", "sink", "jsonl"], env, tmp_path / "sink.log")
    sink.wait_ready()
    lot = dlq_name(names.queue)
    headers = {"ce-source": "urn:foreign", "ce-type": "t.foreign", "ce-specversion": "1.0"}
    try:
        publish_raw(amqp_url, names.exchange, "t.x", b"{}", Basic.Properties(headers=headers))
        wait_for(lambda: "missing_attribute" in listed(env, lot), 30, sink.tail)
        replay = esb_cli(env, "dlq", "replay", lot)
        # at least once: a parked copy whose ack was lost is parked twice, and both replay
        assert replay.stdout.splitlines()[-1].endswith(" replayed"), replay.stderr
        assert not replay.stdout.splitlines()[-1].startswith("0 ")
        wait_for(lambda: "missing_attribute" in listed(env, lot), 30, sink.tail)
        time.sleep(1)  # time enough to be applied, if the invented id made it valid
        assert read_ids(out) == []
        assert "id: required attribute is missing" in listed(env, lot)
    finally:
        sink.stop()
