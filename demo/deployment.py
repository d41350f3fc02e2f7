"""The example integrations deployed: the systems' stand-ins with esb processes between them.

``Deployment.start`` creates the databases, starts the stand-ins and the
real-time processes; ``sell`` and ``win_deals`` make the shop and the CRM
act; ``start_nightly`` adds the nightly report's source and sink;
``snapshot`` reads back what each system holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
from aiohttp import web

from demo.databases import STOCK_START, Database
from demo.mail import MailServer
from demo.marketing import MarketingApi
from demo.services import ROUTES, Service
from demo.shipping import ShippingApi
from demo.shop import SKUS, Shop, order
from esb.teardown import delete_deployment
from esb.testing import free_port
from esb.topology import QueueNames, dlq_name

SHOP_SECRET = "shop-demo-signing-secret"  # noqa: S105 - a demo's stand-in secret
CARRIER_KEY = b"carrier-demo-signing-key"
SHIPPING_TOKEN = "shipping-demo-token"  # noqa: S105
MARKETING_KEY = "marketing-demo-key"
SINKS = (
    "shipping-api",
    "inventory-db",
    "customer-email",
    "accounting-db",
    "marketing-api",
    "audit-log",
    "sales-report",
)
#: Under ``out``: settings files, logs, the stand-in systems' files, the nightly reports, and
#: the processes' working directory (idempotency stores, cursors), all fresh on every start.
DIRECTORIES = ("config", "logs", "systems", "reports", "state")
#: The carrier's recipient fields a reservation keeps, for the shipment booked from it.
RECIPIENT = ("name", "street", "city", "country", "email")
EMAIL_BODY = (
    "Hello {{ data.vars.name }},\n\n"
    "your order {{ data.vars.order }} is on its way with {{ data.vars.carrier }}.\n"
    "Tracking number: {{ data.vars.tracking }}\n"
)


@dataclass
class Snapshot:
    """What each system holds, read from the system itself."""

    shop_answers: dict[int, int]
    shipments: int
    emails: int
    units_taken: int
    reserved: int
    invoices: int
    customers: int
    audit_lines: int
    report_rows: list[str]
    parked: dict[str, int]
    unrouted: int


class Deployment:
    """Stand-ins and esb processes under one broker prefix, with files under ``out``."""

    def __init__(
        self,
        out: Path,
        amqp_url: str,
        prefix: str = "esb.demo",
        postgres_dsn: str | None = None,
        busy_rate: float = 0.1,
        quota_every: int = 20,
        report_schedule: str = "* * * * * */3",
        metrics_host: str = "127.0.0.1",
    ) -> None:
        self.out = out.resolve()
        self.amqp_url = amqp_url
        self.prefix = prefix
        self.exchange = f"{prefix}.events"
        self.report_schedule = report_schedule
        self.metrics_host = metrics_host
        self.crm = Database("crm", self.out / "systems", postgres_dsn)
        self.inventory = Database("inventory", self.out / "systems", postgres_dsn)
        self.accounting = Database("accounting", self.out / "systems", postgres_dsn)
        self.ports = {name: free_port() for name in ("shop", "carrier", "shipping", "marketing")}
        self.shop = Shop(f"http://127.0.0.1:{self.ports['shop']}/webhooks/shop", SHOP_SECRET)
        self.shipping = ShippingApi(
            SHIPPING_TOKEN,
            f"http://127.0.0.1:{self.ports['carrier']}/webhooks/carrier",
            CARRIER_KEY,
            busy_rate=busy_rate,
        )
        self.marketing = MarketingApi(MARKETING_KEY, quota_every=quota_every)
        self.mail = MailServer(free_port())
        self.services = {s.name: s for s in self._services()}
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None
        self.sold = 0
        self.paid: list[int] = []
        self.unfillable: list[str] = []
        self.won = 0
        self.contacts = 0

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Deployment.start() has not been called")
        return self._session

    @property
    def env(self) -> dict[str, str]:
        """What every process shares: the broker, and the journal each hop writes to."""
        return {
            "ESB_BROKER__URL": self.amqp_url,
            "ESB_BROKER__EXCHANGE": self.exchange,
            "ESB_BROKER__PREFIX": self.prefix,
            "ESB_JOURNAL__ENABLED": "true",
            "ESB_JOURNAL__KEYS": '["order_id", "deal_id"]',
            "ESB_JOURNAL__PATH": str(self.out / "state" / "journal.sqlite3"),
        }

    async def trace(self, *args: str) -> str:
        """What ``esb trace ARGS`` prints for this deployment's journal."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "esb.cli",
            "trace",
            *args,
            env={**os.environ, **self.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        return out.decode() if process.returncode == 0 else err.decode()

    # -- the esb processes -------------------------------------------------------------

    def _services(self) -> list[Service]:
        systems = self.out / "systems"
        return [
            Service("router", ["router", "--routes", str(ROUTES)], {}, free_port()),
            Service("transformer", ["transformer", "--routes", str(ROUTES)], {}, free_port()),
            Service("journal", ["journal"], {}, free_port()),
            self._source(
                "shop-webhook",
                "http-webhook",
                correlate="order_id",
                host="127.0.0.1",
                port=self.ports["shop"],
                path="/webhooks/shop",
                signature="shopify",
                secret=SHOP_SECRET,
                event_type_header="X-Shop-Topic",
                type_prefix="shop.",
                id_header="X-Shopify-Webhook-Id",
                event_source="urn:demo:shop",
            ),
            self._source(
                "carrier-webhook",
                "http-webhook",
                correlate="reference",
                host="127.0.0.1",
                port=self.ports["carrier"],
                path="/webhooks/carrier",
                signature="standard",
                secret="whsec_" + base64.b64encode(CARRIER_KEY).decode(),
                event_type="shipping.shipment.created",
                id_header="webhook-id",
                event_source="urn:demo:carrier",
            ),
            self._source(
                "crm-deals",
                "sql",
                correlate="deal_id",
                dsn=self.crm.dsn,
                table="deals",
                id_column="id",
                cursor_column="updated_at",
                where="status = 'won'",
                event_type="crm.deal.won",
                event_source="urn:demo:crm",
                delay_seconds=1.0,
                poll_seconds=0.5,
            ),
            self._source(
                "inventory-reservations",
                "sql",
                correlate="order_id",
                dsn=self.inventory.dsn,
                table="reservations",
                id_column="id",
                mode="outbox",
                outbox_done="mark",
                mark_column="published_at",
                event_type="inventory.order.reserved",
                event_source="urn:demo:inventory",
                poll_seconds=0.2,
            ),
            self._sink(
                "shipping-api",
                "http",
                url=f"http://127.0.0.1:{self.ports['shipping']}/v1/shipments",
                auth={"kind": "bearer", "token": SHIPPING_TOKEN},
                timeout=5,
            ),
            self._sink(
                "inventory-db",
                "sql",
                dsn=self.inventory.dsn,
                table="stock",
                mode="increment",
                key=["sku"],
                rows="data.items",
                columns={"sku": "row.sku", "on_hand": "row.delta"},
                # In the decrement's transaction: the reservation the carrier is booked from.
                outbox={
                    "table": "reservations",
                    "columns": {
                        "order_id": "data.order_id",
                        **{f: f"data.ship_to.{f}" for f in RECIPIENT},
                        "weight_g": "data.weight_g",
                        "service": "data.service",
                    },
                },
            ),
            self._sink(
                "customer-email",
                "email",
                host="127.0.0.1",
                port=self.mail.port,
                security="none",
                sender="Demo Shop <orders@shop.example>",
                to="{{ data.to }}",
                subject="Your order {{ data.vars.order }} is on its way",
                body=EMAIL_BODY,
            ),
            self._sink(
                "accounting-db",
                "sql",
                dsn=self.accounting.dsn,
                table="invoices",
                mode="upsert",
                key=["deal_id"],
                columns={
                    column: f"data.{column}"
                    for column in (
                        "deal_id",
                        "client_id",
                        "invoice_date",
                        "due_date",
                        "amount",
                        "currency",
                        "description",
                    )
                },
            ),
            self._sink(
                "marketing-api",
                "http",
                method="PUT",
                url=f"http://127.0.0.1:{self.ports['marketing']}/v1/contacts/{{data.email}}",
                auth={"kind": "api_key", "header": "X-API-Key", "key": MARKETING_KEY},
                timeout=5,
            ),
            self._sink("audit-log", "jsonl", path=str(systems / "audit-log.jsonl")),
            self._source(
                "daily-sales",
                "sql",
                correlate="day",
                dsn=self.accounting.dsn,
                table="daily_sales",
                id_column="day",
                cursor_column="day",
                event_type="accounting.sales.daily",
                event_source="urn:demo:accounting",
                poll_seconds=0.5,
            ),
            self._sink(
                "sales-report",
                "files",
                directory=str(self.out / "reports"),
                schedule=self.report_schedule,
                name="sales-{period}.csv",
                columns=["day", "invoices", "total"],
            ),
        ]

    @staticmethod
    def _source(name: str, adapter: str, /, correlate: str, **settings: Any) -> Service:
        """A source whose events share ``correlationid`` with the others of one business
        object: the value of the data field ``correlate`` (an order's or a deal's number)."""
        config = {"source": {"correlation_field": correlate}, "adapter": settings}
        return Service(name, ["source", adapter], config, free_port())

    @staticmethod
    def _sink(name: str, adapter: str, /, **settings: Any) -> Service:
        return Service(name, ["sink", adapter], {"adapter": settings}, free_port())

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Fresh databases and queues, the stand-ins, and every real-time process, ready."""
        for directory in DIRECTORIES:
            shutil.rmtree(self.out / directory, ignore_errors=True)
            (self.out / directory).mkdir(parents=True)
        for database in (self.crm, self.inventory, self.accounting):
            database.create()
        for sku in SKUS:
            self.inventory.execute("INSERT INTO stock VALUES (?, ?)", (sku, STOCK_START))
        await delete_deployment(self.amqp_url, self.prefix, self.exchange, SINKS)
        self.mail.start()
        for app, port in ((self.shipping.app(), "shipping"), (self.marketing.app(), "marketing")):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.ports[port]).start()
            self._runners.append(runner)
        self._session = aiohttp.ClientSession()
        nightly = ("daily-sales", "sales-report")
        await self._start([s for s in self.services.values() if s.name not in nightly])

    async def start_nightly(self) -> None:
        """The nightly report's source and sink, as a scheduled job would start them."""
        await self._start([self.services["sales-report"], self.services["daily-sales"]])

    async def _start(self, services: list[Service]) -> None:
        for service in services:
            await service.start(self.out, self.env)
        self._write_scrape_targets()
        await asyncio.gather(*(s.wait_ready(self.session, self.out, 60) for s in services))
        await asyncio.sleep(0.2)
        for service in services:  # ready, and still its own process answering
            service.check_running(self.out)

    def _write_scrape_targets(self) -> None:
        """The running processes' /metrics, for Prometheus's file-based discovery."""
        running = [s for s in self.services.values() if s.process is not None]
        targets = [{"targets": [f"{self.metrics_host}:{s.health_port}" for s in running]}]
        (self.out / "prometheus-targets.json").write_bytes(orjson.dumps(targets))

    async def stop(self) -> None:
        """Stop whatever started, also after a start that failed half-way."""
        await asyncio.gather(*(s.stop() for s in self.services.values()))
        if self._session is not None:
            await self._session.close()
        for runner in self._runners:
            await runner.cleanup()
        self.mail.stop()

    # -- the systems at work -------------------------------------------------------------

    async def sell(self, orders: int, abandoned: int = 0, concurrency: int = 16) -> None:
        """The shop takes ``orders`` paid orders and ``abandoned`` carts that are never paid."""
        session = self.session
        slots = asyncio.Semaphore(concurrency)

        async def one(n: int, paid: bool) -> None:
            async with slots:
                await self.shop.sell(session, n, paid=paid)

        first = self.sold + 1
        numbers = range(first, first + orders + abandoned)
        await asyncio.gather(*(one(n, n - first < orders) for n in numbers))
        self.paid.extend(range(first, first + orders))
        self.sold += orders + abandoned

    async def sell_unfillable(self, sku: str = "SKU-01", qty: int = 5_000) -> str:
        """The shop takes a paid order for more than the warehouse holds; its number."""
        self.sold += 1
        placed = {**order(self.sold), "lines": [{"sku": sku, "qty": qty}]}
        await self.shop.post(self.session, "order.paid", placed)
        self.unfillable.append(placed["order_id"])
        return str(placed["order_id"])

    def reservations(self, order_id: str) -> int:
        """The inventory's reservations of an order: 1 once its stock was taken, else 0."""
        return int(
            self.inventory.scalar(
                "SELECT count(*) FROM reservations WHERE order_id = ?", (order_id,)
            )
        )

    def win_deals(self, deals: int, without_email: int = 0) -> None:
        """Sales people mark deals won in the CRM, closed over the last days and today (UTC,
        the day the databases' ``daily_sales`` view counts as complete)."""
        today = time.time()
        for n in range(self.won + 1, self.won + deals + 1):
            closed = time.strftime("%d.%m.%Y", time.gmtime(today - 86_400 * (n % 4)))
            email = "" if n <= self.won + without_email else f"buyer{n}@example.com"
            self.crm.execute(
                "INSERT INTO deals (deal_id, title, customer_id, amount, contact_email) "
                "VALUES (?, ?, ?, ?, ?)",
                (f"D-{n}", f"Licence {n}", f"CUST-{n:04d}", f"{n * 100}.5", email),
            )
            self.crm.execute(
                "UPDATE deals SET status = 'won', closed_on = ?, updated_at = ? WHERE deal_id = ?",
                (closed, time.time(), f"D-{n}"),
            )
        self.won += deals
        self.contacts += deals - without_email

    def flows_done(self, s: Snapshot) -> bool:
        """Every real-time flow has delivered what the shop and the CRM did so far."""
        return (
            s.reserved >= len(self.paid)
            and s.shipments >= len(self.paid)
            and s.emails >= len(self.paid)
            and s.units_taken >= self.paid_units()
            and s.invoices >= self.won
            and s.customers >= self.contacts
            and s.audit_lines >= self.sold + len(self.paid)
        )

    def paid_units(self) -> int:
        """Units in the paid orders: what the inventory must have given out."""
        return sum(line["qty"] for n in self.paid for line in order(n)["lines"])

    async def wait_until(
        self, done: Callable[[Snapshot], bool], within: float, what: str
    ) -> Snapshot:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            snapshot = await self.snapshot()
            if done(snapshot):
                return snapshot
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{what} within {within:.0f} s; last seen: {snapshot}")
            await asyncio.sleep(0.25)

    async def snapshot(self) -> Snapshot:
        audit = self.out / "systems" / "audit-log.jsonl"
        reports = sorted((self.out / "reports").glob("sales-*.csv"))
        rows = [line for path in reports for line in path.read_text().splitlines()[1:]]
        parked, unrouted = await self.queue_depths()
        taken = self.inventory.scalar("SELECT sum(on_hand) FROM stock")
        return Snapshot(
            shop_answers=dict(self.shop.answers),
            shipments=len(self.shipping.shipments),
            emails=len(self.mail.mailbox.messages),
            units_taken=STOCK_START * len(SKUS) - int(taken),
            reserved=int(
                self.inventory.scalar(
                    "SELECT count(*) FROM reservations WHERE published_at IS NOT NULL"
                )
            ),
            invoices=int(self.accounting.scalar("SELECT count(*) FROM invoices")),
            customers=sum(stage == "customer" for stage in self.marketing.contacts.values()),
            audit_lines=audit.read_bytes().count(b"\n") if audit.exists() else 0,
            report_rows=rows,
            parked=parked,
            unrouted=unrouted,
        )

    async def queue_depths(self) -> tuple[dict[str, int], int]:
        """Messages parked per sink, and events no route took."""
        names = QueueNames(self.prefix)
        queues = {sink: dlq_name(names.sink(sink)) for sink in SINKS}
        queues["router"] = dlq_name(names.router)
        depths: dict[str, int] = {}
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            for name, queue in {**queues, "unrouted": names.unrouted}.items():
                channel = await connection.channel()
                with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                    declared = await channel.declare_queue(queue, passive=True)
                    depths[name] = declared.declaration_result.message_count or 0
        unrouted = depths.pop("unrouted", 0)
        return {name: n for name, n in depths.items() if n}, unrouted

    async def parking_lots(self) -> str:
        """What ``esb dlq list`` shows an operator about this deployment's parked messages."""
        listing = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "esb.cli",
            "dlq",
            "list",
            "--routes",
            str(ROUTES),
            env={**os.environ, **self.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await listing.communicate()
        return output.decode()

    async def metrics(self, name: str) -> str:
        async with self.session.get(self.services[name].metrics_url) as response:
            return await response.text()
