"""The web shop: creates orders and posts signed order webhooks, retrying as shops do."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import Counter
from typing import Any

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

SKUS = [f"SKU-{n:02d}" for n in range(1, 13)]


class DeliveryRefused(Exception):
    """The receiver answered with a status that retrying will not change."""


class ReceiverBusy(Exception):
    """The receiver answered 5xx or could not be reached: deliver again later."""


def order(n: int) -> dict[str, Any]:
    """Order number ``n``, the same on every run."""
    lines = [{"sku": SKUS[(n + k) % len(SKUS)], "qty": 1 + (n + k) % 3} for k in range(1 + n % 2)]
    return {
        "order_id": f"SO-{n:05d}",
        "status": "paid",
        "total": round(9.5 + n * 1.37, 2),
        "weight_g": 250 + n * 10,
        "express": n % 7 == 0,
        "customer": {"name": f"Customer {n}", "email": f"customer{n}@example.com"},
        "shipping": {"street": f"{n} Market St", "city": "Lyon", "country": "FR"},
        "lines": lines,
    }


class Shop:
    """Posts ``order.created`` and ``order.paid`` webhooks, signed like Shopify's."""

    def __init__(self, webhook_url: str, secret: str) -> None:
        self.webhook_url = webhook_url
        self.secret = secret.encode()
        self.answers: Counter[int] = Counter()

    async def sell(self, session: aiohttp.ClientSession, n: int, *, paid: bool = True) -> None:
        """Order ``n`` is placed and, unless ``paid`` is False (an abandoned cart), paid."""
        placed = order(n)
        await self.post(session, "order.created", {**placed, "status": "pending"})
        if paid:
            await self.post(session, "order.paid", placed)

    async def post(self, session: aiohttp.ClientSession, topic: str, data: dict[str, Any]) -> None:
        body = orjson.dumps(data)
        headers = {
            "Content-Type": "application/json",
            "X-Shop-Topic": topic,
            "X-Shopify-Webhook-Id": f"{data['order_id']}-{topic}",
            "X-Shopify-Hmac-Sha256": base64.b64encode(
                hmac.new(self.secret, body, hashlib.sha256).digest()
            ).decode(),
        }
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(ReceiverBusy),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(120),
            reraise=True,
        ):
            with attempt:
                await self._deliver(session, body, headers)

    async def _deliver(
        self, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str]
    ) -> None:
        try:
            async with session.post(self.webhook_url, data=body, headers=headers) as response:
                self.answers[response.status] += 1
                if response.status >= 500:
                    raise ReceiverBusy(f"{self.webhook_url} answered {response.status}")
                if response.status >= 300:
                    text = await response.text()
                    raise DeliveryRefused(f"{self.webhook_url} answered {response.status}: {text}")
        except aiohttp.ClientConnectionError as exc:
            raise ReceiverBusy(f"{self.webhook_url}: {exc}") from exc
