"""The health watcher itself: a loop blocked by its own work is a fault; waiting for a core
while other processes hold both is the machine's and is not.

Three small aiohttp servers stand in for esb processes: one that blocks its loop on the CPU
for 300 ms of CPU every half second, one that sleeps in its loop (blocked, yet off the core), and
one that does nothing but is niced to 19 and pinned to one core beside two busy loops
there, so it waits for that core at each probe.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from esb.testing import free_port
from tests.support.hostile import Watcher

SERVER = """
import asyncio, sys, time
from aiohttp import web

async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")

async def block(kind: str) -> None:
    while True:
        await asyncio.sleep(0.5)
        if kind == "spin":  # 300 ms on a core, however long the machine makes it wait
            until = time.thread_time() + 0.3
            while time.thread_time() < until:
                pass
        elif kind == "sleep":
            time.sleep(0.3)

async def main(port: int, kind: str) -> None:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await block(kind)

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""

HOG = "while True: pass"


def start(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    """A server of that kind, once it listens."""
    port = free_port()
    popen = subprocess.Popen([sys.executable, "-c", SERVER, str(port), kind])
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return popen, port
        except OSError:
            assert time.monotonic() < deadline, f"the {kind} server did not listen"
            time.sleep(0.05)


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[dict[str, dict[str, Any]]]:
    servers = {kind: start(kind) for kind in ("spin", "sleep", "idle")}
    cpu = min(os.sched_getaffinity(0))
    starved = servers["idle"][0].pid
    os.sched_setaffinity(starved, {cpu})
    os.setpriority(os.PRIO_PROCESS, starved, 19)
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", HOG], preexec_fn=lambda: os.sched_setaffinity(0, {cpu})
        )
        for _ in range(2)
    ]
    out = tmp_path / "watch.json"
    specs = [f"{name}={port}:{popen.pid}" for name, (popen, port) in servers.items()]
    try:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "tests.support.hostile_watch", str(out), *specs]
        )
        started = time.monotonic() + 30  # its start waits for a core beside the hogs
        while not out.with_suffix(".started").exists() and time.monotonic() < started:
            time.sleep(0.02)
        time.sleep(6)
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=15)
        yield orjson.loads(out.read_bytes())
    finally:
        for popen in [*(p for p, _ in servers.values()), *hogs]:
            popen.kill()
            popen.wait()


def test_watcher_blames_a_blocked_loop_and_not_a_busy_machine(
    watched: dict[str, dict[str, Any]],
) -> None:
    faults = "\n".join(Watcher.faults(watched))
    assert watched["spin"]["worst_ms"] >= 200, watched["spin"]
    assert watched["sleep"]["worst_ms"] >= 200, watched["sleep"]
    assert "spin: /healthz worst" in faults
    assert "sleep: /healthz worst" in faults
    starved = watched["idle"]
    assert starved["probes"] > 10, starved
    assert starved["worst_raw_ms"] - starved["worst_ms"] >= 20, starved
    assert "idle:" not in faults, faults
