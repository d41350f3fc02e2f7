"""Write the demo's input files and print how many deliveries each target should get."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

ORDERS = 300
DEALS = 60


def main(out: Path) -> None:
    expected = {
        name: 0
        for name in (
            "shipping-api",
            "inventory-db",
            "customer-email",
            "accounting-db",
            "marketing-api",
            "audit-log",
        )
    }
    with (out / "shop-orders.jsonl").open("wb") as orders:
        for n in range(1, ORDERS + 1):
            kind = ("created", "paid", "shipped")[n % 3]
            data = {
                "order_id": f"SO-{n:05d}",
                "status": "paid" if kind != "created" else "pending",
                "total": round(9.5 + n * 1.37, 2),
                "weight_g": 250 + n * 10,
                "express": n % 7 == 0,
                "customer": {"name": f"Customer {n}", "email": f"customer{n}@example.com"},
                "shipping": {"street": f"{n} Market St", "city": "Lyon", "country": "FR"},
                "lines": [{"sku": f"SKU-{n % 11}", "qty": 1 + n % 3}],
            }
            event = {
                "specversion": "1.0",
                "id": f"shop-{n}",
                "source": "urn:demo:shop",
                "type": f"shop.order.{kind}",
                "data": data,
            }
            orders.write(orjson.dumps(event) + b"\n")
            expected["audit-log"] += 1
            if kind in ("paid", "shipped"):
                expected["shipping-api"] += 1
            if kind == "paid":
                expected["inventory-db"] += 1
            if kind == "shipped":
                expected["customer-email"] += 1
    with (out / "crm-deals.jsonl").open("wb") as deals:
        for n in range(1, DEALS + 1):
            data = {
                "deal_id": f"D-{n}",
                "title": f"Licence {n}",
                "customer_id": f"CUST-{n:04d}",
                "closed_on": f"{1 + n % 28:02d}.11.2026",
                "amount": f"{n * 100}.5",
                "contact_email": f"buyer{n}@example.com" if n % 4 else "",
            }
            event = {
                "specversion": "1.0",
                "id": f"deal-{n}",
                "source": "urn:demo:crm",
                "type": "crm.deal.won",
                "data": data,
            }
            deals.write(orjson.dumps(event) + b"\n")
            expected["accounting-db"] += 1
            if n % 4:
                expected["marketing-api"] += 1
    print(f"{ORDERS} orders (created, paid, shipped) in {out}/shop-orders.jsonl")
    print(f"{DEALS} won deals in {out}/crm-deals.jsonl")
    for name, count in expected.items():
        print(f"expect {name} {count}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
