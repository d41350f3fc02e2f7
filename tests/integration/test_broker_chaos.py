"""The broker killed, its connections closed, its memory alarm raised, all under load.

A private node (never the shared one); a source streams 10,000 events into a
sink. Each disruption lands mid-stream; afterwards every event is in the
sink's file exactly once, and while the alarm blocks publishing the source
stops having events accepted.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from tests.conftest import Names
from tests.support.processes import EsbProcess, line_count, read_ids, wait_for, write_orders
from tests.support.prometheus import metric
from tests.support.rabbit import PrivateRabbit

N = 10_000


def test_kill_close_connections_and_memory_alarm_under_load(
    private_rabbit: PrivateRabbit, names: Names, tmp_path: Path
) -> None:
    env = {
        "ESB_BROKER__URL": private_rabbit.url,
        "ESB_BROKER__EXCHANGE": names.exchange,
        "ESB_CONSUME__QUEUE": names.queue,
        "ESB_CONSUME__BINDINGS": '["#"]',
        "ESB_BROKER__PUBLISH_TIMEOUT": "3",
    }
    expected = write_orders(tmp_path / "orders.jsonl", N)
    out = tmp_path / "out.jsonl"
    sink = EsbProcess(
        ["run", "sink", "jsonl"], {**env, "ESB_ADAPTER__PATH": str(out)}, tmp_path / "sink.log"
    )
    sink.wait_ready()
    source = EsbProcess(
        ["run", "source", "jsonl"],
        {
            **env,
            "ESB_ADAPTER__PATH": str(tmp_path / "orders.jsonl"),
            "ESB_ADAPTER__EVENT_TYPE": "shop.order.created",
            "ESB_ADAPTER__ID_FIELD": "order_id",
            "ESB_ADAPTER__WINDOW": "1",
            "ESB_SERVICE__NAME": "chaos-source",
        },
        tmp_path / "source.log",
    )
    try:
        wait_for(lambda: line_count(out) >= 1_000, 60, sink.tail)
        private_rabbit.kill()
        time.sleep(1)
        private_rabbit.start()

        wait_for(lambda: line_count(out) >= 3_000, 90, sink.tail)
        private_rabbit.ctl("close_all_connections", "chaos test")
        wait_for(lambda: line_count(out) >= 5_000, 90, sink.tail)

        private_rabbit.ctl("set_vm_memory_high_watermark", "0")
        time.sleep(2)
        accepted_early = metric(
            source.metrics(), "esb_published_total", service="chaos-source", outcome="ok"
        )
        time.sleep(8)
        accepted_late = metric(
            source.metrics(), "esb_published_total", service="chaos-source", outcome="ok"
        )
        private_rabbit.ctl("set_vm_memory_high_watermark", "0.4")
        assert accepted_late == accepted_early, "events were accepted while the broker was blocked"
        assert line_count(out) < N, "the stream ended before the alarm"

        assert source.wait(timeout=180) == 0, source.tail()
        wait_for(lambda: line_count(out) >= N, 120, sink.tail)
    finally:
        sink.stop()
        source.stop()
    ids = read_ids(out)
    assert [i for i, seen in Counter(ids).items() if seen > 1] == []
    assert sorted(ids) == sorted(expected)
    assert sink.log.read_text().count("reconnected") >= 2  # after the kill and the close
