"""``make demo``: the three example integrations end to end, then what each system holds."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from pathlib import Path

from demo.deployment import Deployment, Snapshot
from esb.histograms import summarize

ORDERS = 200
ABANDONED = 20
DEALS = 40
DEALS_WITHOUT_EMAIL = 5


def step(text: str) -> None:
    print(text, flush=True)


async def run(
    out: Path, amqp_url: str, postgres_dsn: str | None, keep: bool, metrics_host: str
) -> None:
    started = time.monotonic()
    deployment = Deployment(out, amqp_url, postgres_dsn=postgres_dsn, metrics_host=metrics_host)
    databases = "PostgreSQL" if postgres_dsn else f"SQLite files in {out}/systems"
    step(f"1. databases ({databases}), shop, carrier, marketing tool and mail server stand-ins")
    try:
        await deployment.start()
        running = ", ".join(
            s for s in deployment.services if s not in ("daily-sales", "sales-report")
        )
        step(f"2. esb processes running: {running}")
        step(f"   each one's settings: {out}/config/*.yaml, logs: {out}/logs/")
        step(
            f"3. the shop sells {ORDERS} orders ({ABANDONED} carts abandoned), "
            f"the CRM marks {DEALS} deals won"
        )
        deployment.win_deals(DEALS, without_email=DEALS_WITHOUT_EMAIL)
        await deployment.sell(ORDERS, ABANDONED)
        flows = await deployment.wait_until(
            deployment.flows_done, within=120, what="the real-time flows did not complete"
        )
        step(f"4. real-time flows done {time.monotonic() - started:.1f} s after the start")
        show_flows(deployment, flows)
        step("5. the shop sells an order the warehouse cannot fill: 5,000 x SKU-01")
        refused = await deployment.sell_unfillable("SKU-01", 5_000)
        await deployment.wait_until(
            lambda s: s.parked.get("inventory-db", 0) >= 1, 60, "the refused order was not parked"
        )
        step("   the stock table refused it (on_hand >= 0) and the sink parked it; esb dlq list:")
        for line in (await deployment.parking_lots()).splitlines():
            if line.strip() and not line.endswith(" 0 parked"):
                step(f"     {line}")
        await asyncio.sleep(1)  # five polls of the reservations outbox: time to ship it wrongly
        step(f"   {not_shipped(deployment, refused)}")
        step("   fix the stock, then `esb dlq replay` reserves it once and the carrier books it")
        step("   (see docs/demo.md)")
        step("6. the nightly job: accounting's completed days into the sales report")
        await deployment.start_nightly()
        days = int(deployment.accounting.scalar("SELECT count(*) FROM daily_sales"))
        report = await deployment.wait_until(
            lambda s: len(s.report_rows) >= days, 60, "the sales report was not written"
        )
        for path in sorted((out / "reports").glob("*.csv")):
            step(f"   {path}:")
            for line in path.read_text().splitlines():
                step(f"     {line}")
        step(f"   parked: {report.parked or 'nothing'}; unrouted: {report.unrouted}")
        metrics = await deployment.metrics("shipping-api")
        consumed = [line for line in metrics.splitlines() if line.startswith("esb_consumed_total")]
        step("7. metrics: every process serves /metrics, e.g. the shipping-api sink:")
        for line in consumed:
            step(f"     {line}")
        step("   end-to-end age, occurrence to applied (esb_event_age_seconds), p50 / p99:")
        for line in await flow_ages(deployment):
            step(f"     {line}")
        step(f"   Prometheus targets for all of them: {out}/prometheus-targets.json;")
        step("   alerts and the Grafana dashboard: docs/monitoring.md")
        step("8. where did order SO-00001 go? esb trace --key order_id=SO-00001 (the journal):")
        for line in (await one_order(deployment, "SO-00001")).splitlines():
            step(f"     {line}")
        if not keep:
            step("   `make demo KEEP=1` keeps every process and its /metrics up after the run")
        if keep:
            step("   still running for you to look at (Ctrl-C ends it):")
            for service in deployment.services.values():
                step(f"     {service.name:<16} {service.metrics_url}")
            stop = asyncio.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(signum, stop.set)
            await stop.wait()
    finally:
        await deployment.stop()
    step(f"demo done in {time.monotonic() - started:.1f} s; everything it wrote is in {out}/")


def not_shipped(deployment: Deployment, order_id: str) -> str:
    """The check that a refused order was neither reserved nor booked; RuntimeError if it was."""
    reserved = deployment.reservations(order_id)
    shipments = deployment.shipping.shipments
    if reserved or order_id in shipments:
        raise RuntimeError(
            f"{order_id} was refused by the stock table but has {reserved} reservation(s) "
            f"and {'a' if order_id in shipments else 'no'} shipment"
        )
    return (
        f"no reservation was committed for {order_id}, so the carrier never booked it: "
        f"{len(shipments)} shipments, none for {order_id}"
    )


async def one_order(deployment: Deployment, order_id: str) -> str:
    """The order's trace once the journal holds its shipment mail: created, paid, reserved,
    shipped."""

    async def traced() -> str:
        return await deployment.trace("--key", f"order_id={order_id}")

    text = await traced()
    for _ in range(100):
        if "applied by customer-email" in text:
            break
        await asyncio.sleep(0.1)
        text = await traced()
    return text


async def flow_ages(deployment: Deployment) -> list[str]:
    """A line per flow (sink and route) from each sink's /metrics: how late events arrived."""
    lines = []
    for name, service in deployment.services.items():
        if service.process is None:  # not started (the nightly job before step 6)
            continue
        text = await deployment.metrics(name)
        ages = summarize(text, "esb_event_age_seconds", ["route"], [0.5, 0.99])
        for (route,), summary in ages.items():
            p50, p99 = summary.quantiles
            lines.append(
                f"{name:<16} route {route:<27} {p50 * 1000:7,.0f} ms / {p99 * 1000:7,.0f} ms "
                f"({summary.count:,.0f} events)"
            )
    return lines


def show_flows(deployment: Deployment, flows: Snapshot) -> None:
    shop = ", ".join(f"{n} x {status}" for status, n in sorted(flows.shop_answers.items()))
    carrier = ", ".join(f"{n} x {s}" for s, n in sorted(deployment.shipping.answers.items()))
    marketing = ", ".join(f"{n} x {s}" for s, n in sorted(deployment.marketing.answers.items()))
    low = deployment.inventory.execute("SELECT sku, on_hand FROM stock ORDER BY on_hand LIMIT 1")
    first = next(iter(deployment.shipping.shipments.values()))
    mail = deployment.mail.mailbox.messages[0]
    deal, client, day, amount, currency = deployment.accounting.execute(
        "SELECT deal_id, client_id, invoice_date, amount, currency FROM invoices "
        "ORDER BY deal_id LIMIT 1"
    )[0]
    step(f"   shop        webhooks answered: {shop}")
    step(f"   shipping    {flows.shipments} shipments booked (answers: {carrier}),")
    step(
        f"               e.g. {first['reference']} -> {first['tracking_number']}, "
        f"{first['weight_kg']} kg {first['service']}"
    )
    step(
        f"   inventory   {flows.units_taken} of {deployment.paid_units()} ordered units "
        f"taken from stock, {flows.reserved} orders reserved for the carrier; "
        f"lowest now {low[0][0]} at {low[0][1]}"
    )
    step(
        f"   mail        {flows.emails} shipping e-mails, e.g. to {mail['To']}: {mail['Subject']!r}"
    )
    step(
        f"   accounting  {flows.invoices} invoices, e.g. {deal} to client {client} "
        f"on {day}: {amount} {currency}"
    )
    step(f"   marketing   {flows.customers} contacts now customers (answers: {marketing})")
    step(f"   audit log   {flows.audit_lines} order events")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="Where files go.")
    parser.add_argument("--keep", action="store_true", help="Keep running until Ctrl-C.")
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="Host Prometheus reaches the processes' /metrics at (a container's name).",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("ESB_DEMO_POSTGRES"),
        help="PostgreSQL DSN for the databases (default: SQLite files).",
    )
    args = parser.parse_args()
    amqp_url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    asyncio.run(run(args.out, amqp_url, args.postgres, args.keep, args.metrics_host))


if __name__ == "__main__":
    main()
