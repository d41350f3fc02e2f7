"""The three example integrations end to end, through the demo's deployment.

Real ``esb run`` processes on RabbitMQ between stand-ins that validate what
they get and fail now and then (503s from the carrier, 429s from the
marketing tool): N paid orders give N stock decrements, N reservations, N
shipments and N e-mails, an order the stock cannot fill is parked at the
inventory and never shipped, the won deals give invoices and customer
contacts, the completed days give the nightly report's rows, and nothing else
happens anywhere.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from demo.__main__ import flow_ages, one_order
from demo.databases import STOCK_START
from demo.deployment import SINKS, Deployment
from demo.shop import order
from esb.histograms import summarize
from esb.teardown import delete_deployment
from tests.support.postgres import require_postgres

pytestmark = pytest.mark.integration

AGE = "esb_event_age_seconds"
ORDERS = 120
ABANDONED = 15
DEALS = 24
WITHOUT_EMAIL = 4


@pytest.fixture(params=["sqlite", "postgresql"])
async def deployment(
    request: pytest.FixtureRequest, amqp_url: str, tmp_path: Path
) -> AsyncIterator[Deployment]:
    postgres = require_postgres() if request.param == "postgresql" else None
    prefix = f"esbt-{uuid.uuid4().hex[:10]}"
    running = Deployment(
        tmp_path, amqp_url, prefix=prefix, postgres_dsn=postgres, busy_rate=0.2, quota_every=7
    )
    try:
        await running.start()
        yield running
    finally:
        await running.stop()
        await delete_deployment(amqp_url, prefix, running.exchange, SINKS)


async def test_each_integration_applies_every_event_once_and_nothing_else(
    deployment: Deployment,
) -> None:
    deployment.win_deals(DEALS, without_email=WITHOUT_EMAIL)
    await deployment.sell(ORDERS, abandoned=ABANDONED)
    # Paid while the orders above are still on their way: its stock decrement is refused, so
    # it must be parked at the inventory and reach the carrier by no path.
    refused = await deployment.sell_unfillable("SKU-01", 5_000)
    await deployment.wait_until(
        lambda s: deployment.flows_done(s) and s.parked.get("inventory-db", 0) >= 1,
        150,
        "the flows did not complete",
    )
    await deployment.shipping.settled()
    after = await deployment.snapshot()

    # Each paid order's shipment is one age observation: occurrence to the carrier's 201.
    shipping = [line for line in await flow_ages(deployment) if line.startswith("shipping-api")]
    assert len(shipping) == 1
    assert shipping[0].endswith(f"({ORDERS} events)")
    ages = summarize(await deployment.metrics("shipping-api"), AGE, ["route"], [0.5, 0.99])
    ((p50, p99),) = [summary.quantiles for summary in ages.values()]
    assert 0 < p50 <= p99 < 150

    # One order's path from the journal: the shop's created and paid webhooks and the
    # carrier's shipment share its number as correlationid, so one trace holds all three.
    trace = await one_order(deployment, "SO-00001")
    assert trace.startswith("order_id SO-00001: "), trace
    assert "correlation SO-00001" in trace.splitlines()[0]
    assert trace.count("shop-webhook (source)  published") == 2
    assert trace.count("inventory-reservations (source)  published") == 1
    assert trace.count("carrier-webhook (source)  published") == 1
    for sink in ("shipping-api", "inventory-db", "customer-email", "audit-log"):
        assert f"now: applied by {sink} at " in trace, trace
    assert "customer1@example.com" not in trace  # keys and ids, never the data

    paid = [order(n) for n in range(1, ORDERS + 1)]
    assert after.shop_answers == {202: 2 * ORDERS + ABANDONED + 1}
    assert after.audit_lines == 2 * ORDERS + ABANDONED + 1
    assert after.parked == {"inventory-db": 1}
    assert after.unrouted == 0

    # Reserved with its decrement, or not at all: the refused order has neither, so the
    # carrier, booked from reservations only, never saw it.
    assert after.reserved == ORDERS
    assert deployment.reservations(refused) == 0
    shipments = deployment.shipping.shipments
    assert refused not in shipments
    assert sorted(shipments) == [o["order_id"] for o in paid]
    assert deployment.shipping.answers[201] == ORDERS
    assert deployment.shipping.answers[503] > 0, "the carrier never failed: retries untested"
    first = shipments["SO-00001"]
    assert first["recipient"] == {
        "name": "Customer 1",
        "street": "1 Market St",
        "city": "Lyon",
        "country": "FR",
        "email": "customer1@example.com",
    }
    assert (first["weight_kg"], first["service"], first["carrier"]) == (0.26, "standard", "DHL")
    assert shipments["SO-00007"]["service"] == "express"

    mails = deployment.mail.mailbox.messages
    assert sorted(m["To"] for m in mails) == sorted(o["customer"]["email"] for o in paid)
    for mail in mails:
        reference = mail["Subject"].split()[2]
        assert shipments[reference]["tracking_number"] in mail.get_payload()

    wanted: Counter[str] = Counter()
    for placed in paid:
        for line in placed["lines"]:
            wanted[line["sku"]] += line["qty"]
    stock = dict(deployment.inventory.execute("SELECT sku, on_hand FROM stock"))
    assert {sku: STOCK_START - on_hand for sku, on_hand in stock.items()} == {
        sku: wanted[sku] for sku in stock
    }

    invoices = deployment.accounting.execute(
        "SELECT deal_id, client_id, invoice_date, amount, currency, description FROM invoices"
    )
    assert len(invoices) == DEALS
    by_deal = {row[0]: row for row in invoices}
    deal_3 = deployment.crm.execute("SELECT closed_on FROM deals WHERE deal_id = 'D-3'")[0][0]
    day, month, year = deal_3.split(".")
    assert by_deal["D-3"][1:3] == ("CUST-0003", f"{year}-{month}-{day}")
    assert Decimal(by_deal["D-3"][3]) == Decimal("300.50")
    assert by_deal["D-3"][4:] == ("EUR", "Deal D-3: Licence 3")

    with_email = {f"buyer{n}@example.com" for n in range(WITHOUT_EMAIL + 1, DEALS + 1)}
    assert deployment.marketing.contacts == dict.fromkeys(with_email, "customer")
    assert deployment.marketing.answers[429] > 0, "the quota never hit: Retry-After untested"

    days = deployment.accounting.execute(
        "SELECT day, invoices, total FROM daily_sales ORDER BY day"
    )
    assert days, "no completed day: the deals should close over the last days"
    await deployment.start_nightly()
    report = await deployment.wait_until(
        lambda s: len(s.report_rows) >= len(days), 60, "the nightly report was not written"
    )
    assert report.report_rows == [f"{d},{n},{total}" for d, n, total in days]
    targets = orjson.loads((deployment.out / "prometheus-targets.json").read_bytes())
    assert sorted(targets[0]["targets"]) == sorted(
        f"127.0.0.1:{service.health_port}" for service in deployment.services.values()
    )
    assert report.parked == {"inventory-db": 1}
