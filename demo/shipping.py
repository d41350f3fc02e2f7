"""The carrier's shipment API: books shipments and calls back with their tracking numbers.

Like a real carrier it wants a bearer token and an Idempotency-Key, refuses
a malformed or incomplete request with 4xx and the reason, is sometimes
overloaded (503, to be retried), answers a repeated key with the shipment it
already booked, and reports each booked shipment to a webhook signed the
Standard Webhooks way, retrying until the receiver takes it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

SERVICES = ("standard", "express")
MAX_WEIGHT_KG = 31.5


class CallbackNotTaken(Exception):
    """The receiver of the shipment webhook did not answer 2xx."""


def problems(body: Any) -> list[str]:
    """What is wrong with a shipment request, as the carrier would list it."""
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    found = []
    if not isinstance(body.get("reference"), str) or not body["reference"]:
        found.append("reference is required")
    recipient = body.get("recipient")
    if not isinstance(recipient, dict):
        return [*found, "recipient is required"]
    for name in ("name", "street", "city", "country", "email"):
        if not isinstance(recipient.get(name), str) or not recipient[name]:
            found.append(f"recipient.{name} is required")
    country = recipient.get("country")
    if isinstance(country, str) and (len(country) != 2 or not country.isupper()):
        found.append(f"recipient.country {country!r} is not an ISO 3166 code")
    weight = body.get("weight_kg")
    if not isinstance(weight, int | float) or not 0 < weight <= MAX_WEIGHT_KG:
        found.append(f"weight_kg must be above 0 and at most {MAX_WEIGHT_KG}")
    if body.get("service") not in SERVICES:
        found.append(f"service must be one of {', '.join(SERVICES)}")
    return found


class ShippingApi:
    """POST /v1/shipments; GET /v1/shipments lists what was booked."""

    def __init__(
        self,
        token: str,
        callback_url: str,
        callback_secret: bytes,
        busy_rate: float = 0.0,
        seed: int = 1,
    ) -> None:
        self.token = token
        self.callback_url = callback_url
        self.callback_secret = callback_secret
        self.busy_rate = busy_rate
        self.shipments: dict[str, dict[str, Any]] = {}
        self.answers: Counter[int] = Counter()
        self._by_key: dict[str, dict[str, Any]] = {}
        self._random = random.Random(seed)  # noqa: S311 - simulated overload, not security
        self._callbacks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/shipments", self.book)
        app.router.add_get("/v1/shipments", self.list)
        app.on_cleanup.append(self._close)
        return app

    def _answer(self, status: int, body: dict[str, Any]) -> web.Response:
        self.answers[status] += 1
        return web.json_response(body, status=status, dumps=_dumps)

    async def book(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._answer(401, {"error": "missing or wrong bearer token"})
        key = request.headers.get("Idempotency-Key")
        if not key:
            return self._answer(400, {"error": "Idempotency-Key header is required"})
        if self._random.random() < self.busy_rate:
            return self._answer(503, {"error": "overloaded, try again"})
        if key in self._by_key:
            return self._answer(200, self._by_key[key])
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return self._answer(400, {"error": f"invalid JSON: {exc}"})
        if found := problems(body):
            return self._answer(422, {"error": "invalid shipment", "problems": found})
        if body["reference"] in self.shipments:
            return self._answer(409, {"error": f"{body['reference']} is already booked"})
        tracking = f"{body.get('carrier', 'DHL')}{len(self.shipments) + 1:010d}"
        shipment = {**body, "tracking_number": tracking, "booked_at": time.time()}
        self.shipments[body["reference"]] = shipment
        self._by_key[key] = {"reference": body["reference"], "tracking_number": tracking}
        task = asyncio.create_task(self._call_back(shipment))
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)
        return self._answer(201, self._by_key[key])

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.shipments.values()), dumps=_dumps)

    async def settled(self) -> None:
        """Wait until every shipment webhook was taken (or given up on)."""
        while self._callbacks:
            await asyncio.gather(*self._callbacks, return_exceptions=True)

    async def _call_back(self, shipment: dict[str, Any]) -> None:
        recipient = shipment["recipient"]
        body = orjson.dumps(
            {
                "reference": shipment["reference"],
                "tracking_number": shipment["tracking_number"],
                "carrier": shipment.get("carrier", "DHL"),
                "service": shipment["service"],
                "recipient": {"name": recipient["name"], "email": recipient["email"]},
            }
        )
        message_id = f"msg_{shipment['tracking_number']}"
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((CallbackNotTaken, aiohttp.ClientError)),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(300),
            reraise=True,
        ):
            with attempt:
                await self._post_callback(message_id, body)

    async def _post_callback(self, message_id: str, body: bytes) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timestamp = str(int(time.time()))
        signed = f"{message_id}.{timestamp}.".encode() + body
        signature = base64.b64encode(
            hmac.new(self.callback_secret, signed, hashlib.sha256).digest()
        ).decode()
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": f"v1,{signature}",
        }
        async with self._session.post(self.callback_url, data=body, headers=headers) as response:
            if response.status >= 300:
                raise CallbackNotTaken(f"{self.callback_url} answered {response.status}")

    async def _close(self, _: web.Application) -> None:
        for task in self._callbacks:
            task.cancel()
        if self._session is not None:
            await self._session.close()


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
