"""What the three pipelines of bench/pipeline.py share: the order, the route's work, arrivals.

The plain aio-pika and FastStream pipelines do the paid-orders route's work in
Python (`transform_order`), with the JSON Schema taken from the same route file
esb loads, so all three check the same thing.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import jsonschema_rs
import yaml
from jsonschema import Draft202012Validator

ROUTES_DIR = Path(__file__).parent / "routes"
ROUTE = "paid-orders-to-fulfilment"
SCHEMA = "fulfilment-order.v1"
ORDER_TYPE = "shop.order.paid"
SOURCE = "urn:bench:shop"
ORDERED_AT_FORMAT = "%d/%m/%Y %H:%M:%S"

#: Unconfirmed publishes a source keeps in flight; unacked deliveries per consumer.
WINDOW = 256
PREFETCH = 64

#: One arrival record: the order's sequence number and CLOCK_MONOTONIC in ns, which every
#: process on the machine shares, so a sink's clock and a source's compare directly.
ARRIVAL = struct.Struct("<qq")

_LINES = [
    {"sku": "BK-1042", "name": "The Analytical Engine, 2nd ed.", "qty": 1, "price": 34.5},
    {"sku": "PN-0009", "name": "Fountain pen, medium nib", "qty": 2, "price": 18.9},
    {"sku": "NB-0311", "name": "Squared notebook A5", "qty": 3, "price": 6.4},
    {"sku": "GF-0001", "name": "Gift wrapping", "qty": 1, "price": 3.0},
]


def order(seq: int) -> dict[str, Any]:
    """A paid shop order of about 1 KiB as JSON; ``seq`` is readable back from its id."""
    return {
        "order_id": f"SO-{seq:09d}",
        "status": "paid",
        "channel": "web",
        "customer_id": f"C-{seq % 9973:05d}",
        "customer_name": "Ada Lovelace",
        "customer_email": f"ada.lovelace+{seq % 997}@example.com",
        "customer_phone": "+44 20 7946 0958",
        "ordered_at": "24/11/2026 14:03:59",
        "currency": "EUR",
        "total": 134.1,
        "payment": {"method": "card", "provider": "acquirer-eu", "reference": f"pay_{seq:012d}"},
        "shipping": {
            "name": "Ada Lovelace",
            "street": "12 St James's Square",
            "city": "London",
            "postcode": "SW1Y 4JH",
            "country": "GB",
            "method": "standard",
        },
        "billing": {
            "name": "Ada Lovelace",
            "street": "12 St James's Square",
            "city": "London",
            "postcode": "SW1Y 4JH",
            "country": "GB",
        },
        "lines": _LINES,
        "tags": ["newsletter", "returning-customer"],
        "notes": "Please leave the parcel with the concierge if nobody answers the door.",
    }


def seq_of(order_id: str) -> int:
    return int(order_id[3:])


def route_file() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROUTES_DIR / "orders.yaml").read_text())
    return data


class Validator(Protocol):
    def validate(self, instance: Any) -> None: ...


#: What the plain and FastStream transformers validate with (BENCH_VALIDATOR): jsonschema
#: (pure Python) by default, or jsonschema-rs (Rust), which esb tries first.
VALIDATORS = ("jsonschema", "jsonschema-rs")


def validator() -> Validator:
    """The paid-orders route's schema from the route file, compiled once."""
    schema = route_file()["schemas"][SCHEMA]
    if os.environ.get("BENCH_VALIDATOR", "jsonschema") == "jsonschema-rs":
        fast: Validator = jsonschema_rs.validator_for(schema)
        return fast
    return Draft202012Validator(schema)


def is_paid(data: dict[str, Any]) -> bool:
    """The route's condition, ``data.status == "paid"``."""
    return data.get("status") == "paid"


def transform_order(data: dict[str, Any], schema: Validator) -> dict[str, Any]:
    """The route's steps: rename customer_email, make ordered_at ISO 8601 (UTC), validate.

    Raises ``ValueError`` (bad date) or the validator's ``ValidationError``: permanent failures.
    """
    out = dict(data)
    out["email"] = out.pop("customer_email")
    ordered = datetime.strptime(out["ordered_at"], ORDERED_AT_FORMAT).replace(tzinfo=UTC)
    out["ordered_at"] = ordered.isoformat()
    schema.validate(out)
    return out


class Arrivals:
    """A sink's record of when each order arrived, written in batches to the driver's pipe.

    The driver passes the pipe's write end as a file descriptor; a record is a
    sequence number and a CLOCK_MONOTONIC reading. Batches leave every few
    milliseconds, so recording costs a sink the same in every pipeline.
    """

    FLUSH_SECONDS = 0.005

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.flusher: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls) -> Arrivals:
        return cls(int(os.environ["BENCH_ARRIVALS_FD"]))

    def record(self, order_id: str) -> None:
        self.buffer += ARRIVAL.pack(seq_of(order_id), time.monotonic_ns())
        if self.flusher is None:
            self.flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.FLUSH_SECONDS)
        self.flusher = None
        self.flush()

    def flush(self) -> None:
        data, self.buffer = bytes(self.buffer), bytearray()
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
