"""consume.ordered: one active consumer among replicas, one delivery at a time, in queue order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from esb import Broker, BrokerSettings, CloudEvent, Metrics
from esb.runtime import BrokerEmitter
from tests.conftest import Names
from tests.support.processes import EsbProcess, line_count, read_ids, wait_for

N = 2_000


async def test_replicas_keep_publish_order_across_a_failover(
    esb_env: dict[str, str], names: Names, amqp_url: str, tmp_path: Path
) -> None:
    env = {**esb_env, "ESB_CONSUME__ORDERED": "true"}
    first_out, second_out = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first = EsbProcess(
        ["run", "sink", "jsonl"],
        {**env, "ESB_ADAPTER__PATH": str(first_out)},
        tmp_path / "first.log",
    )
    second = EsbProcess(
        ["run", "sink", "jsonl"],
        {**env, "ESB_ADAPTER__PATH": str(second_out)},
        tmp_path / "second.log",
    )
    try:
        first.wait_ready()
        second.wait_ready()
        broker = Broker(
            BrokerSettings.model_validate({"url": amqp_url, "exchange": names.exchange}),
            "test",
            Metrics(),
        )
        await broker.connect()
        emitter = BrokerEmitter(broker, asyncio.Event())
        for n in range(N):
            await emitter.emit(CloudEvent.new("customer.updated", "urn:crm", {"n": n}, id=f"u-{n}"))
        await broker.close()
        halfway = lambda: max(line_count(first_out), line_count(second_out)) >= N // 2  # noqa: E731
        await asyncio.to_thread(wait_for, halfway, 60, first.tail)
        active, standby = (first, second) if line_count(first_out) >= N // 2 else (second, first)
        active_out, standby_out = (
            (first_out, second_out) if active is first else (second_out, first_out)
        )
        assert line_count(standby_out) == 0, "two replicas were active at once"
        active.kill()
        await asyncio.to_thread(
            wait_for,
            lambda: len(set(read_ids(first_out)) | set(read_ids(second_out))) == N,
            60,
            standby.tail,
        )
    finally:
        first.stop()
        second.stop()
    before = read_ids(active_out)
    after = [i for i in read_ids(standby_out) if i not in set(before)]
    assert before + after == [f"u-{n}" for n in range(N)]
