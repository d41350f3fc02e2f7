"""SIGKILL of the router, a transformer and the sink mid-stream: nothing lost or applied twice.

The ledger is the sequence number in every event; the oracle is the sink's
file, which must hold each number exactly once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from esb import CloudEvent
from esb.runtime import BrokerEmitter
from tests.support.processes import (
    LEDGER_ROUTES,
    EsbProcess,
    connected_broker,
    ledger,
    line_count,
    wait_for,
)

N = 5_000


async def test_kills_of_every_hop_mid_stream_lose_and_duplicate_nothing(
    routed_env: dict[str, str], tmp_path: Path
) -> None:
    env = routed_env
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "r.yaml").write_text(LEDGER_ROUTES)
    out = tmp_path / "ledger.jsonl"
    sink_env = {**env, "ESB_SERVICE__NAME": "ledger", "ESB_ADAPTER__PATH": str(out)}

    def router(n: int) -> EsbProcess:
        return EsbProcess(
            ["run", "router", "--routes", str(routes)], env, tmp_path / f"router{n}.log"
        )

    def transformer(n: int) -> EsbProcess:
        return EsbProcess(
            ["run", "transformer", "--routes", str(routes)], env, tmp_path / f"map{n}.log"
        )

    def sink(n: int) -> EsbProcess:
        return EsbProcess(["run", "sink", "jsonl"], sink_env, tmp_path / f"sink{n}.log")

    running = {"router": router(0), "map": transformer(0), "sink": sink(0)}
    restart = {"router": router, "map": transformer, "sink": sink}
    try:
        for process in running.values():
            process.wait_ready()
        broker = await connected_broker(env, "ledger-source")
        emitter = BrokerEmitter(broker, asyncio.Event())
        publishing = asyncio.create_task(_publish(emitter))

        for hop, at in (("router", 800), ("map", 2000), ("sink", 3200)):
            await asyncio.to_thread(
                wait_for, lambda at=at: line_count(out) >= at, 120, running["sink"].tail
            )
            running[hop].kill()
            running[hop] = restart[hop](1)
            await asyncio.to_thread(running[hop].wait_ready)
        await publishing
        await broker.close()
        await asyncio.to_thread(wait_for, lambda: line_count(out) >= N, 120, running["sink"].tail)
        await asyncio.sleep(1.0)  # anything applied twice would show up now
    finally:
        for process in running.values():
            process.stop()

    counts = ledger(out)
    assert sorted(counts) == list(range(N))
    assert [seq for seq, seen in counts.items() if seen > 1] == []


async def _publish(emitter: BrokerEmitter) -> None:
    window = asyncio.Semaphore(64)

    async def one(seq: int) -> None:
        async with window:
            await emitter.emit(
                CloudEvent.new("ledger.entry", "urn:ledger", {"seq": seq}, id=f"entry-{seq}")
            )
            await asyncio.sleep(0.001)

    await asyncio.gather(*(one(seq) for seq in range(N)))
