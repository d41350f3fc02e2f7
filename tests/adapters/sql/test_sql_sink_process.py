"""`esb run sink sql` in batch mode, as an operator runs it, on RabbitMQ and PostgreSQL."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Names
from tests.support.postgres import PG_DSN, pg, require_postgres
from tests.support.processes import EsbProcess, wait_for, write_orders
from tests.support.prometheus import metric

N = 3_000


@pytest.fixture
def orders() -> Iterator[str]:
    require_postgres()
    table = f"orders_{uuid.uuid4().hex[:8]}"
    pg(f'CREATE TABLE "{table}" (order_id TEXT, total NUMERIC)')  # no key: a double write shows
    yield table
    pg(f'DROP TABLE "{table}"')
    pg(f"DELETE FROM esb_applied WHERE scope = '{table}'")


def test_a_queue_of_orders_is_written_once_each_in_batches_of_prefetch_size(
    esb_env: dict[str, str], names: Names, orders: str, tmp_path: Path
) -> None:
    write_orders(tmp_path / "orders.jsonl", N)
    declare = EsbProcess(
        ["topology", "declare", "--queue", names.queue], esb_env, tmp_path / "declare.log"
    )
    assert declare.wait(timeout=30) == 0, declare.tail()
    source_env = {
        **esb_env,
        "ESB_ADAPTER__PATH": str(tmp_path / "orders.jsonl"),
        "ESB_ADAPTER__EVENT_TYPE": "shop.order.created",
        "ESB_ADAPTER__ID_FIELD": "order_id",
    }
    source = EsbProcess(["run", "source", "jsonl"], source_env, tmp_path / "source.log")
    assert source.wait(timeout=120) == 0, source.tail()
    sink = EsbProcess(
        ["run", "sink", "sql"],
        {
            **esb_env,
            "ESB_BROKER__PREFETCH": "200",
            "ESB_ADAPTER__DSN": PG_DSN,
            "ESB_ADAPTER__TABLE": orders,
            "ESB_ADAPTER__MODE": "insert",
            "ESB_ADAPTER__COLUMNS": '{"order_id": "data.order_id", "total": "data.total"}',
            "ESB_ADAPTER__TRANSACTION": "batch",
            "ESB_ADAPTER__BATCH_SIZE": "100",
        },
        tmp_path / "sink.log",
    )
    try:
        sink.wait_ready()
        wait_for(
            lambda: pg(f'SELECT COUNT(*) FROM "{orders}"')[0][0] >= N,
            60,
            lambda: f"rows missing; sink log:\n{sink.tail()}",
        )
        # the same orders again (a replay): none written twice, each counted as a duplicate
        again = EsbProcess(["run", "source", "jsonl"], source_env, tmp_path / "again.log")
        assert again.wait(timeout=120) == 0, again.tail()
        wait_for(
            lambda: metric(sink.metrics(), "esb_duplicates_total", service="sql-sink") == N,
            60,
            lambda: f"duplicates not counted; sink log:\n{sink.tail()}",
        )
        sink.signal(signal.SIGTERM)
        assert sink.wait(timeout=10) == 0, sink.tail()
    finally:
        sink.stop()
    assert pg(f'SELECT COUNT(*), COUNT(DISTINCT order_id) FROM "{orders}"') == [(N, N)]
    # Events committed together share their transaction's time in esb_applied.
    commits = pg(f"SELECT COUNT(DISTINCT at) FROM esb_applied WHERE scope = '{orders}'")[0][0]
    assert commits <= N // 100 * 2, f"{commits} transactions for {N} events"
