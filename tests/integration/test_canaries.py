"""Canary secrets and personal data never reach logs, parked-message headers or metric labels."""

from __future__ import annotations

from pathlib import Path

import aio_pika

from esb import Broker, BrokerSettings, CloudEvent, Metrics
from esb.topology import QueueNames, dlq_name
from tests.support.processes import EsbProcess, read_ids, wait_for
from tests.support.rabbit import PrivateRabbit

PASSWORD = "Canary-Pw-7c41e9"
EMAIL = "canary.person@example.org"
CARD = "4111 1111 1111 1111"
CANARIES = (PASSWORD, EMAIL, CARD, CARD.replace(" ", ""))

ROUTES = """\
sinks: {crm: {}}
schemas:
  payment.v1:
    type: object
    required: [card_number, email]
    properties:
      card_number: {type: string, pattern: "^tok_"}
      email: {type: string, pattern: "@example\\\\.com$"}
routes:
  - name: payments
    from: pay.#
    steps: [{validate: payment.v1}]
    to: crm
"""


async def test_no_canary_in_logs_parked_headers_or_metrics(
    private_rabbit: PrivateRabbit, tmp_path: Path
) -> None:
    private_rabbit.ctl("add_user", "canary", PASSWORD)
    private_rabbit.ctl("set_permissions", "-p", "/", "canary", ".*", ".*", ".*")
    url = f"amqp://canary:{PASSWORD}@127.0.0.1:{private_rabbit.port}/"
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "r.yaml").write_text(ROUTES)
    env = {
        "ESB_BROKER__URL": url,
        "ESB_BROKER__PREFIX": "canary",
        "ESB_SERVICE__LOG_LEVEL": "DEBUG",
    }
    out = tmp_path / "crm.jsonl"
    processes = [
        EsbProcess(["run", "router", "--routes", str(routes)], env, tmp_path / "router.log"),
        EsbProcess(["run", "transformer", "--routes", str(routes)], env, tmp_path / "tf.log"),
        EsbProcess(
            ["run", "sink", "jsonl"],
            {**env, "ESB_SERVICE__NAME": "crm", "ESB_ADAPTER__PATH": str(out)},
            tmp_path / "sink.log",
        ),
    ]
    try:
        for process in processes:
            process.wait_ready()
        broker = Broker(BrokerSettings.model_validate({"url": url}), "test", Metrics())
        await broker.connect()
        await broker.publish(
            CloudEvent.new(
                "pay.card.added", "urn:pay", {"card_number": CARD, "email": EMAIL}, id="leaky"
            )
        )
        await broker.publish(
            CloudEvent.new(
                "pay.card.added",
                "urn:pay",
                {"card_number": "tok_1", "email": "ok@example.com"},
                id="ok",
            )
        )
        await broker.close()
        wait_for(lambda: len(read_ids(out)) == 1, 30, processes[2].tail)

        names = QueueNames("canary")
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            lot = await channel.declare_queue(dlq_name(names.steps("transformer")), passive=True)
            parked = await lot.get(timeout=10)
            headers = str(parked.headers)
            assert "x-esb-error" in parked.headers
            await parked.ack()
        texts = {"parked headers": headers}
        for process in processes:
            texts[process.log.name] = process.log.read_text()
            texts[f"{process.log.name} metrics"] = process.metrics()
        assert "validate payment.v1" in texts["tf.log"]
        leaks = [(where, c) for where, text in texts.items() for c in CANARIES if c in text]
        assert leaks == []
    finally:
        for process in processes:
            process.stop()
