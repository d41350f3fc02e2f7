"""The jsonl source on a pipe: waiting for input never holds its event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO

import aio_pika
import orjson

from esb.testing import free_port
from tests.conftest import Names
from tests.support.processes import ESB, wait_for


def answers(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def piped_source(env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*ESB, "run", "source", "jsonl"], env=env, stdin=subprocess.PIPE, stdout=log, stderr=log
    )


async def test_a_silent_pipe_leaves_health_answering_and_sigterm_stops_the_source(
    amqp_url: str, names: Names, tmp_path: Path
) -> None:
    """It used to block in readline on the event loop: /readyz never answered."""
    port = free_port()
    env = {
        **os.environ,
        "ESB_BROKER__URL": amqp_url,
        "ESB_BROKER__EXCHANGE": names.exchange,
        "ESB_ADAPTER__EVENT_TYPE": "t.piped",
        "ESB_SERVICE__HEALTH_PORT": str(port),
    }
    log = (tmp_path / "source.log").open("wb")
    source = piped_source(env, log)
    assert source.stdin is not None
    try:
        wait_for(lambda: answers(port, "/readyz"), 30, (tmp_path / "source.log").read_text)
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(names.exchange, routing_key="#")
            started = time.monotonic()
            assert answers(port, "/healthz")
            assert time.monotonic() - started < 1
            source.stdin.write(b'{"order": "SO-1"}\n')
            source.stdin.flush()
            for _ in range(300):
                if (message := await queue.get(fail=False)) is not None:
                    break
                await asyncio.sleep(0.1)
            assert message is not None, (tmp_path / "source.log").read_text()
            assert orjson.loads(message.body) == {"order": "SO-1"}
        source.send_signal(signal.SIGTERM)
        assert source.wait(timeout=15) == 0
    finally:
        if source.poll() is None:
            source.kill()
        source.stdin.close()
        log.close()
