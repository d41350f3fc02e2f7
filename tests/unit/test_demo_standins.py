"""The demo's stand-ins refuse what the real systems refuse, so the integrations are tested
against something that checks them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from demo.marketing import MarketingApi
from demo.shipping import ShippingApi

AUTH = {"Authorization": "Bearer t"}
SHIPMENT: dict[str, Any] = {
    "reference": "SO-1",
    "recipient": {
        "name": "Ada",
        "street": "1 Way",
        "city": "London",
        "country": "GB",
        "email": "ada@example.com",
    },
    "weight_kg": 1.25,
    "service": "standard",
    "carrier": "DHL",
}


@pytest.fixture
async def carrier() -> AsyncIterator[tuple[ShippingApi, TestClient[Any, Any]]]:
    api = ShippingApi("t", "http://127.0.0.1:9/unreachable", b"key")
    async with TestClient(TestServer(api.app())) as client:
        yield api, client


@pytest.fixture
async def marketing() -> AsyncIterator[tuple[MarketingApi, TestClient[Any, Any]]]:
    api = MarketingApi("k", quota_every=3)
    async with TestClient(TestServer(api.app())) as client:
        yield api, client


async def book(client: TestClient[Any, Any], body: Any, **headers: str) -> tuple[int, Any]:
    headers = {**AUTH, "Idempotency-Key": "k-1", **headers}
    async with client.post("/v1/shipments", json=body, headers=headers) as response:
        return response.status, await response.json()


async def test_the_carrier_books_once_per_idempotency_key(
    carrier: tuple[ShippingApi, TestClient[Any, Any]],
) -> None:
    api, client = carrier
    status, first = await book(client, SHIPMENT)
    assert status == 201
    assert await book(client, SHIPMENT) == (200, first)
    assert list(api.shipments) == ["SO-1"]
    status, answer = await book(client, SHIPMENT, **{"Idempotency-Key": "k-2"})
    assert (status, answer["error"]) == (409, "SO-1 is already booked")


async def test_the_carrier_refuses_bad_requests_with_the_reason(
    carrier: tuple[ShippingApi, TestClient[Any, Any]],
) -> None:
    api, client = carrier
    assert (await book(client, SHIPMENT, Authorization="Bearer wrong"))[0] == 401
    async with client.post("/v1/shipments", json=SHIPMENT, headers=AUTH) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "Idempotency-Key header is required"
    bad = {
        **SHIPMENT,
        "recipient": {**SHIPMENT["recipient"], "country": "France", "email": ""},
        "weight_kg": 40,
        "service": "overnight",
    }
    status, answer = await book(client, bad)
    assert status == 422
    assert answer["problems"] == [
        "recipient.email is required",
        "recipient.country 'France' is not an ISO 3166 code",
        "weight_kg must be above 0 and at most 31.5",
        "service must be one of standard, express",
    ]
    assert api.shipments == {}


async def test_an_overloaded_carrier_answers_503() -> None:
    api = ShippingApi("t", "http://127.0.0.1:9/unreachable", b"key", busy_rate=1.0)
    async with TestClient(TestServer(api.app())) as client:
        assert (await book(client, SHIPMENT))[0] == 503
    assert api.shipments == {}


async def test_the_marketing_tool_checks_keys_stages_addresses_and_its_quota(
    marketing: tuple[MarketingApi, TestClient[Any, Any]],
) -> None:
    api, client = marketing

    async def put(email: str, body: Any, key: str = "k") -> int:
        url = f"/v1/contacts/{email}"
        async with client.put(url, json=body, headers={"X-API-Key": key}) as response:
            return response.status

    assert await put("a@example.com", {"lifecycle_stage": "customer"}, key="wrong") == 401
    assert await put("a@example.com", {"lifecycle_stage": "customer"}) == 201
    assert await put("a@example.com", {"lifecycle_stage": "vip"}) == 422
    assert await put("a@example.com", {"lifecycle_stage": "customer"}) == 429
    assert await put("not-an-address", {"lifecycle_stage": "lead"}) == 422
    assert await put("a@example.com", {"lifecycle_stage": "lead"}) == 200
    assert api.contacts == {"a@example.com": "lead"}
