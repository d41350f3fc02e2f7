"""Source to sink through a real RabbitMQ, with the processes run as an operator runs them."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import Names
from tests.support.processes import EsbProcess, line_count, read_ids, wait_for, write_orders
from tests.support.rabbit import PrivateRabbit, queue_depth

N = 10_000


def source_env(env: dict[str, str], path: Path) -> dict[str, str]:
    return {
        **env,
        "ESB_ADAPTER__PATH": str(path),
        "ESB_ADAPTER__EVENT_TYPE": "shop.order.created",
        "ESB_ADAPTER__ID_FIELD": "order_id",
    }


def start_sink(env: dict[str, str], out: Path, log: Path) -> EsbProcess:
    sink = EsbProcess(["run", "sink", "jsonl"], {**env, "ESB_ADAPTER__PATH": str(out)}, log)
    sink.wait_ready()
    return sink


def wait_lines(path: Path, count: int, timeout: float, process: EsbProcess) -> None:
    wait_for(
        lambda: line_count(path) >= count,
        timeout,
        lambda: f"{line_count(path)} of {count} lines in {path}; sink log:\n{process.tail()}",
    )


def assert_exactly_once(out: Path, expected: list[str]) -> None:
    ids = read_ids(out)
    duplicates = [key for key, seen in Counter(ids).items() if seen > 1]
    assert duplicates == []
    assert sorted(ids) == sorted(expected)


def test_ten_thousand_events_reach_the_sink_exactly_once(
    esb_env: dict[str, str], tmp_path: Path
) -> None:
    expected = write_orders(tmp_path / "orders.jsonl", N)
    sink = start_sink(esb_env, tmp_path / "out.jsonl", tmp_path / "sink.log")
    try:
        source = EsbProcess(
            ["run", "source", "jsonl"],
            source_env(esb_env, tmp_path / "orders.jsonl"),
            tmp_path / "source.log",
        )
        assert source.wait(timeout=120) == 0, source.tail()
        wait_lines(tmp_path / "out.jsonl", N, 60, sink)
    finally:
        sink.stop()
    assert_exactly_once(tmp_path / "out.jsonl", expected)


def test_sink_killed_mid_stream_and_restarted_loses_nothing(
    esb_env: dict[str, str], tmp_path: Path
) -> None:
    expected = write_orders(tmp_path / "orders.jsonl", N)
    out = tmp_path / "out.jsonl"
    sink = start_sink(esb_env, out, tmp_path / "sink.log")
    source = EsbProcess(
        ["run", "source", "jsonl"],
        source_env(esb_env, tmp_path / "orders.jsonl"),
        tmp_path / "source.log",
    )
    try:
        wait_lines(out, 2_000, 60, sink)
        sink.kill()
        written_before_kill = line_count(out)
        assert written_before_kill < N, "the kill came too late to be mid-stream"
        sink = start_sink(esb_env, out, tmp_path / "sink2.log")
        assert source.wait(timeout=120) == 0, source.tail()
        wait_lines(out, N, 60, sink)
    finally:
        sink.stop()
        source.stop()
    assert_exactly_once(out, expected)


async def test_sigterm_exits_within_5s_and_acks_only_what_was_written(
    esb_env: dict[str, str], names: Names, amqp_url: str, tmp_path: Path
) -> None:
    expected = write_orders(tmp_path / "orders.jsonl", N)
    out = tmp_path / "out.jsonl"
    declare = EsbProcess(
        ["topology", "declare", "--queue", names.queue], esb_env, tmp_path / "declare.log"
    )
    assert declare.wait(timeout=30) == 0, declare.tail()
    source = EsbProcess(
        ["run", "source", "jsonl"],
        source_env(esb_env, tmp_path / "orders.jsonl"),
        tmp_path / "source.log",
    )
    assert source.wait(timeout=120) == 0, source.tail()

    sink = start_sink(esb_env, out, tmp_path / "sink.log")
    wait_lines(out, 1_000, 60, sink)
    sink.signal(signal.SIGTERM)
    started = time.monotonic()
    code = sink.wait(timeout=10)
    elapsed = time.monotonic() - started
    assert code == 0, sink.tail()
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"

    written = line_count(out)
    assert written < N, "SIGTERM came after the stream ended"
    assert written + await queue_depth(amqp_url, names.queue) == N

    sink = start_sink(esb_env, out, tmp_path / "sink2.log")
    try:
        wait_lines(out, N, 60, sink)
    finally:
        sink.stop()
    assert_exactly_once(out, expected)


@pytest.mark.private_broker
def test_source_and_sink_ride_through_a_broker_restart(
    private_rabbit: PrivateRabbit, names: Names, tmp_path: Path
) -> None:
    env = {
        "ESB_BROKER__URL": private_rabbit.url,
        "ESB_BROKER__EXCHANGE": names.exchange,
        "ESB_CONSUME__QUEUE": names.queue,
        "ESB_CONSUME__BINDINGS": '["#"]',
    }
    expected = write_orders(tmp_path / "orders.jsonl", N)
    out = tmp_path / "out.jsonl"
    sink = start_sink(env, out, tmp_path / "sink.log")
    # One event in flight at a time keeps the stream going long enough to stop the broker mid-way.
    source = EsbProcess(
        ["run", "source", "jsonl"],
        {**source_env(env, tmp_path / "orders.jsonl"), "ESB_ADAPTER__WINDOW": "1"},
        tmp_path / "source.log",
    )
    try:
        wait_lines(out, 500, 60, sink)
        private_rabbit.stop()
        assert source.popen.poll() is None, "the source finished before the broker stopped"
        assert line_count(out) < N, "the broker stopped after the stream ended"
        time.sleep(2)
        private_rabbit.start()
        assert source.wait(timeout=120) == 0, source.tail()
        wait_lines(out, N, 90, sink)
        assert "reconnected" in sink.log.read_text()
        assert "retrying" in source.log.read_text()
    finally:
        sink.stop()
        source.stop()
    assert_exactly_once(out, expected)
