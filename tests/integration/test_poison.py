"""A message that crashes its consumer every time is parked by the quorum delivery limit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aio_pika

from esb import Broker, BrokerSettings, CloudEvent, Metrics
from esb.testing import free_port
from esb.topology import QueueSpec, declare_queue
from tests.conftest import Names
from tests.support.processes import read_ids

LIMIT = 3


def supervise(env: dict[str, str], out: Path, log_path: Path, expected: int) -> int:
    """Restart the sink whenever it dies, as a container runtime would; count the crashes."""
    crashes = 0
    deadline = time.monotonic() + 90
    with log_path.open("ab") as log:
        while len(read_ids(out)) < expected and time.monotonic() < deadline:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.crashing_sink", str(out)],
                env={**env, "ESB_SERVICE__HEALTH_PORT": str(free_port())},
                stdout=log,
                stderr=log,
            )
            while process.poll() is None and len(read_ids(out)) < expected:
                time.sleep(0.05)
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
            elif process.returncode == 3:
                crashes += 1
    return crashes


async def test_a_poison_message_is_parked_after_the_delivery_limit_and_the_rest_flow(
    esb_env: dict[str, str], names: Names, amqp_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    env = {
        **os.environ,
        **esb_env,
        "ESB_BROKER__DELIVERY_LIMIT": str(LIMIT),
        "ESB_BROKER__PREFETCH": "1",
        "ESB_SERVICE__SHUTDOWN_GRACE": "0.5",
    }
    broker = Broker(
        BrokerSettings.model_validate(
            {"url": amqp_url, "exchange": names.exchange, "delivery_limit": LIMIT}
        ),
        "test",
        Metrics(),
    )
    await broker.connect()
    await declare_queue(broker.channel, QueueSpec(names.queue, ["#"]), broker.settings)
    await broker.publish(CloudEvent.new("t.x", "urn:t", {"poison": True}, id="poison"))
    for n in range(30):
        await broker.publish(CloudEvent.new("t.x", "urn:t", {"n": n}, id=f"ok-{n}"))
    await broker.close()

    crashes = await asyncio.to_thread(supervise, env, out, tmp_path / "sink.log", 30)

    assert sorted(read_ids(out)) == sorted(f"ok-{n}" for n in range(30))
    assert crashes == LIMIT + 1
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        lot = await channel.declare_queue(names.queue + ".dlq", passive=True)
        parked = await lot.get(timeout=5)
        assert parked.headers["ce-id"] == "poison"
        assert parked.headers["x-first-death-reason"] == "delivery_limit"
        await parked.ack()
