"""The journal's store on SQLite and a real PostgreSQL: records arriving in any order and
batching give the same trace, lookups by event, correlation and key, and retention."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esb import TransientError
from esb.journal import HopRecord
from esb.journal_store import JournalStore
from esb.settings import JournalSettings
from esb.trace import render
from tests.support.postgres import pg, require_postgres, terminate_backend

T0 = 1_800_000_000.0


def hop(event: str, outcome: str, at: float, **fields: Any) -> HopRecord:
    role = fields.pop("role", "http")
    return HopRecord.model_validate(
        {
            "event": event,
            "outcome": outcome,
            "service": role,
            "role": role,
            "at": T0 + at,
            "correlation": "SO-7",
            "type": "shop.order.paid",
            **fields,
        }
    )


def out(event: str, to: str, route: str | None = None) -> dict[str, Any]:
    return {"event": event, "to": to, "route": route}


#: One order: published, routed down four routes; one copy applied, one transformed and
#: waiting in a retry delay, one parked, one still in its queue; the order's key on each.
#: docs/monitoring.md shows its trace (test_the_documented_trace_is_what_esb_trace_prints).
FLOW = [
    hop(
        "A",
        "published",
        0.0,
        role="source",
        service="shop-webhook",
        keys={"order_id": "SO-7"},
        outputs=[out("A", "esb.events")],
    ),
    hop(
        "A",
        "routed",
        0.012,
        role="router",
        queue="esb.router",
        keys={"order_id": "SO-7"},
        waited_ms=3,
        took_ms=1.4,
        outputs=[
            out("B", "esb.sink.ledger", "books"),
            out("C", "esb.transform", "shipping"),
            out("E", "esb.sink.audit", "audit"),
            out("F", "esb.sink.crm", "crm"),
        ],
    ),
    hop(
        "B",
        "applied",
        0.019,
        queue="esb.sink.ledger",
        role="jsonl",
        service="ledger",
        waited_ms=5,
        took_ms=0.4,
    ),
    hop(
        "C",
        "transformed",
        0.031,
        role="transformer",
        queue="esb.transform",
        step=1,
        waited_ms=9,
        took_ms=2.1,
        outputs=[out("D", "esb.sink.carrier", "shipping")],
    ),
    hop(
        "D",
        "retrying",
        0.074,
        queue="esb.sink.carrier",
        service="carrier",
        attempt=1,
        retry_at=T0 + 2.074,
        waited_ms=4,
        took_ms=38.5,
        reason="POST https://carrier.example/v1/shipments: 503",
    ),
    hop(
        "F",
        "parked",
        0.052,
        queue="esb.sink.crm",
        service="crm",
        attempt=1,
        waited_ms=6,
        took_ms=20.2,
        reason="permanent: PUT https://crm.example/v1/orders/SO-7: 422",
    ),
]


def expected_lines() -> list[str]:
    return render(FLOW)


@pytest.fixture
def postgres_settings() -> Iterator[JournalSettings]:
    schema = f"journal_{uuid.uuid4().hex[:10]}"
    dsn = require_postgres()
    pg(f"CREATE SCHEMA {schema}")
    try:
        yield JournalSettings(backend="postgres", dsn=f"{dsn}?options=-csearch_path%3D{schema}")
    finally:
        pg(f"DROP SCHEMA {schema} CASCADE")


def test_the_flow_renders_every_place_an_event_can_be() -> None:
    text = "\n".join(expected_lines())
    assert text.splitlines()[0] == "event A  shop.order.paid"
    assert "  now: applied by ledger at 2027-01-15 08:00:00.019" in text
    assert (
        "  now: in a retry delay of esb.sink.carrier: attempt 2 at 2027-01-15 08:00:02.074" in text
    )
    assert "  now: parked in esb.sink.crm.dlq since 2027-01-15 08:00:00.052: permanent: PUT" in text
    assert "  now: waiting in esb.sink.audit since 2027-01-15 08:00:00.012" in text
    assert "event C  shop.order.paid  route shipping" in text
    assert "-> esb.sink.audit, esb.sink.crm, esb.sink.ledger, esb.transform" in text


def orders_and_batches() -> st.SearchStrategy[list[list[HopRecord]]]:
    """FLOW in any order, cut into batches of any size (as processes flush them)."""

    def cut(records: list[HopRecord], sizes: list[int]) -> list[list[HopRecord]]:
        batches, start = [], 0
        for size in sizes:
            if start < len(records):
                batches.append(records[start : start + size])
                start += size
        if start < len(records):
            batches.append(records[start:])
        return batches

    return st.builds(cut, st.permutations(FLOW), st.lists(st.integers(1, 4), max_size=6))


async def stored_then_traced(settings: JournalSettings, batches: list[list[HopRecord]]) -> Any:
    store = JournalStore(settings)
    await store.open()
    try:
        for batch in batches:
            await store.add(batch)
        by_key = await store.correlations_of_key("order_id", "SO-7")
        by_output = await store.correlations_of_event("E")  # sent, never handled
        records = await store.records(by_key)
        return by_key, by_output, render(records)
    finally:
        await store.close()


def check(settings: JournalSettings, batches: list[list[HopRecord]]) -> None:
    by_key, by_output, lines = asyncio.run(stored_then_traced(settings, batches))
    assert by_key == ["SO-7"]
    assert by_output == ["SO-7"]
    assert lines == expected_lines()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=orders_and_batches())
def test_records_in_any_order_and_batching_give_the_same_trace_sqlite(
    tmp_path: Path, batches: list[list[HopRecord]]
) -> None:
    check(JournalSettings(path=tmp_path / f"{uuid.uuid4().hex}.sqlite3"), batches)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=orders_and_batches())
def test_records_in_any_order_and_batching_give_the_same_trace_postgres(
    postgres_settings: JournalSettings, batches: list[list[HopRecord]]
) -> None:
    check(postgres_settings, batches)
    asyncio.run(_empty(postgres_settings))


async def _empty(settings: JournalSettings) -> None:
    store = JournalStore(settings)
    await store.open()
    try:
        await store.purge(before=T0 + 3600)
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_retention_deletes_records_and_their_lookups(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = (
        request.getfixturevalue("postgres_settings")
        if backend == "postgres"
        else JournalSettings(path=tmp_path / "j.sqlite3")
    )
    store = JournalStore(settings)
    await store.open()
    try:
        await store.add(FLOW)
        assert await store.purge(before=T0 + 0.015) == 2  # the source's and the router's records
        assert await store.correlations_of_key("order_id", "SO-7") == []
        assert await store.correlations_of_event("E") == []
        left = await store.records(["SO-7"])
        assert [r.event for r in left] == ["B", "C", "F", "D"]
    finally:
        await store.close()


async def test_an_event_without_a_correlation_files_its_flow_under_its_own_id(
    tmp_path: Path,
) -> None:
    """A source's event without ``correlationid``: the events derived from it carry its id as
    theirs (esb.routing.lineage), so the whole flow is found from any of its ids."""
    store = JournalStore(JournalSettings(path=tmp_path / "j.sqlite3"))
    await store.open()
    try:
        await store.add(
            [
                hop(
                    "X",
                    "published",
                    0.0,
                    role="source",
                    correlation=None,
                    outputs=[out("X", "esb.events")],
                ),
                hop(
                    "X",
                    "routed",
                    0.1,
                    role="router",
                    correlation=None,
                    outputs=[out("Y", "esb.sink.ledger", "books")],
                ),
                hop("Y", "applied", 0.2, correlation="X", service="ledger"),
            ]
        )
        assert await store.correlations_of_event("Y") == ["X"]
        assert await store.correlations_of_event("X") == ["X"]
        lines = render(await store.records(["X"]), focus="Y")
        assert lines[0] == "event X  shop.order.paid"
        assert lines[-1].strip().startswith("now: applied by ledger")
    finally:
        await store.close()


def test_the_documented_trace_is_what_esb_trace_prints() -> None:
    """docs/monitoring.md shows FLOW's trace, its records shuffled as they arrive."""
    doc = (Path(__file__).parents[2] / "docs" / "monitoring.md").read_text()
    start = doc.index("$ esb trace --key order_id=SO-7\n")
    block = doc[start : doc.index("```", start)].splitlines()
    assert block[1] == f"order_id SO-7: {len(FLOW)} hop records, correlation SO-7"
    assert block[2:] == render(list(reversed(FLOW)))


async def test_a_lost_postgres_connection_fails_one_batch_and_the_next_reconnects(
    postgres_settings: JournalSettings,
) -> None:
    """Before, the journal's one connection stayed dead: every batch after failed for good."""
    store = JournalStore(postgres_settings)
    await store.open()
    try:
        await store.add(FLOW[:2])
        await terminate_backend(store.db)
        with pytest.raises(TransientError, match=r"^journal: PostgreSQL host="):
            await store.add(FLOW[2:])
        await store.add(FLOW[2:])  # the batch again, as the journal service redelivers it
        assert len(await store.records(["SO-7"])) == len(FLOW)
    finally:
        await store.close()
