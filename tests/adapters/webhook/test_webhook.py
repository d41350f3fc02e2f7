"""The webhook source against real HTTP requests and a real RabbitMQ."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from adapters.webhook import WebhookSource
from adapters.webhook.settings import WebhookSourceSettings
from esb import Broker, BrokerSettings, CloudEvent, Metrics, from_message
from esb.runtime import BrokerEmitter
from esb.topology import QueueSpec, declare_queue
from tests.support.rabbit import PrivateRabbit

SECRET = "It's a Secret to Everybody"


@dataclass
class Endpoint:
    url: str
    broker: Broker
    queue: str
    source: WebhookSource

    async def post(self, body: bytes, **headers: str) -> tuple[int, dict[str, Any], Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url, data=body, headers=headers) as response,
        ):
            return response.status, dict(response.headers), await response.json()

    async def events(self) -> list[CloudEvent]:
        queue = await self.broker.channel.declare_queue(self.queue, passive=True)
        found = []
        while (message := await queue.get(fail=False, timeout=5)) is not None:
            found.append(from_message(message))
            await message.ack()
        return found


Start = Callable[..., Awaitable[Endpoint]]


@pytest.fixture
async def start(amqp_url: str) -> AsyncIterator[Start]:
    running: list[tuple[WebhookSource, asyncio.Task[None], Broker, str]] = []

    async def go(url: str = amqp_url, **overrides: Any) -> Endpoint:
        prefix = f"esbt-{uuid.uuid4().hex[:10]}"
        broker = Broker(
            BrokerSettings.model_validate(
                {"url": url, "exchange": f"{prefix}.events", "publish_timeout": 1}
            ),
            "webhook-test",
            Metrics(),
        )
        await broker.connect()
        queue = f"{prefix}.q"
        await declare_queue(broker.channel, QueueSpec(queue, ["#"]), broker.settings)
        settings = WebhookSourceSettings.model_validate({"port": 0, **overrides})
        source = WebhookSource(settings, BrokerEmitter(broker, asyncio.Event()))
        task = asyncio.create_task(source.run())
        await asyncio.wait_for(source.listening.wait(), 10)
        running.append((source, task, broker, queue))
        return Endpoint(f"http://127.0.0.1:{source.port}/webhook", broker, queue, source)

    yield go
    for source, task, broker, queue in running:
        source.stopping.set()
        await task
        with contextlib.suppress(Exception):  # the broker of the 503 test is dead by now
            channel = await asyncio.wait_for(broker.connection.channel(), 2)
            await channel.queue_delete(queue)
            await channel.queue_delete(queue + ".dlq")
            await channel.exchange_delete(broker.settings.exchange)
        await broker.close()


BODY = orjson.dumps({"order_id": "SO-1", "total": 12.5})


def github_signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_a_signed_github_delivery_is_published_once(start: Start) -> None:
    endpoint = await start(
        signature="github",
        secret=SECRET,
        event_type_header="X-GitHub-Event",
        type_prefix="github.",
        id_header="X-GitHub-Delivery",
    )
    headers = {
        "X-Hub-Signature-256": github_signature(BODY),
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "d-1",
        "Content-Type": "application/json",
    }
    status, _, answer = await endpoint.post(BODY, **headers)
    assert (status, answer) == (202, {"id": "d-1", "status": "accepted"})
    again, _, answer = await endpoint.post(BODY, **headers)
    assert (again, answer) == (200, {"id": "d-1", "status": "duplicate"})
    [event] = await endpoint.events()
    assert (event.id, event.type, event.data) == ("d-1", "github.push", orjson.loads(BODY))


async def test_a_bad_or_missing_github_signature_is_401(start: Start) -> None:
    endpoint = await start(signature="github", secret=SECRET)
    status, _, answer = await endpoint.post(BODY, **{"X-Hub-Signature-256": github_signature(b"x")})
    assert (status, answer) == (401, {"error": "X-Hub-Signature-256 does not match"})
    status, _, answer = await endpoint.post(BODY)
    assert (status, answer) == (401, {"error": "missing X-Hub-Signature-256"})
    assert await endpoint.events() == []


async def test_shopify_signature_is_base64(start: Start) -> None:
    endpoint = await start(signature="shopify", secret=SECRET)
    good = base64.b64encode(hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()).decode()
    assert (await endpoint.post(BODY, **{"X-Shopify-Hmac-Sha256": good}))[0] == 202
    assert (await endpoint.post(BODY, **{"X-Shopify-Hmac-Sha256": good[::-1]}))[0] == 401
    assert len(await endpoint.events()) == 1
    assert endpoint.source.refused == {"bad_signature": 1}


async def test_stripe_signature_checks_the_timestamp(start: Start) -> None:
    endpoint = await start(signature="stripe", secret=SECRET, tolerance_seconds=300)

    def header(at: int) -> str:
        signed = hmac.new(SECRET.encode(), f"{at}.".encode() + BODY, hashlib.sha256).hexdigest()
        return f"t={at},v1={signed}"

    assert (await endpoint.post(BODY, **{"Stripe-Signature": header(int(time.time()))}))[0] == 202
    status, _, answer = await endpoint.post(
        BODY, **{"Stripe-Signature": header(int(time.time()) - 3600)}
    )
    assert status == 401
    assert re.fullmatch(r"timestamp is 360[01] s away \(tolerance 300 s\)", answer["error"])


async def test_standard_webhooks_signature(start: Start) -> None:
    key = b"0123456789abcdef0123456789abcdef"
    endpoint = await start(
        signature="standard",
        secret="whsec_" + base64.b64encode(key).decode(),
        id_header="webhook-id",
    )
    now = str(int(time.time()))
    signed = base64.b64encode(
        hmac.new(key, b"msg_1." + now.encode() + b"." + BODY, hashlib.sha256).digest()
    ).decode()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": now,
        "webhook-signature": f"v1,bogus v1,{signed}",
    }
    assert (await endpoint.post(BODY, **headers))[0] == 202
    headers["webhook-signature"] = "v1,bogus"
    assert (await endpoint.post(BODY, **headers))[0] == 401
    [event] = await endpoint.events()
    assert event.id == "msg_1"


async def test_bad_json_is_400_and_an_oversize_body_is_413(start: Start) -> None:
    endpoint = await start(max_body_bytes=1024)
    status, _, answer = await endpoint.post(b'{"total": ')
    assert status == 400
    assert answer["error"].startswith("body: not valid JSON")
    async with (
        aiohttp.ClientSession() as session,
        session.post(endpoint.url, data=b"[" + b"1," * 2000 + b"1]") as response,
    ):
        assert response.status == 413
    assert await endpoint.events() == []
    assert endpoint.source.refused == {"invalid_json": 1, "too_large": 1}


async def test_cloudevents_http_binding_in_both_modes_is_taken_as_is(start: Start) -> None:
    endpoint = await start()
    binary = {
        "ce-id": "ce-1",
        "ce-source": "urn:shop",
        "ce-type": "shop.order.paid",
        "ce-specversion": "1.0",
        "Content-Type": "application/json",
    }
    assert (await endpoint.post(BODY, **binary))[0] == 202
    structured = CloudEvent.new("crm.deal.won", "urn:crm", {"deal": 7}, id="ce-2")
    assert (
        await endpoint.post(
            structured.to_structured(), **{"Content-Type": "application/cloudevents+json"}
        )
    )[0] == 202
    events = {e.id: e for e in await endpoint.events()}
    assert (events["ce-1"].type, events["ce-1"].source) == ("shop.order.paid", "urn:shop")
    assert (events["ce-2"].type, events["ce-2"].data) == ("crm.deal.won", {"deal": 7})


async def test_503_with_retry_after_while_the_broker_is_down(
    start: Start, private_rabbit: PrivateRabbit
) -> None:
    endpoint = await start(url=private_rabbit.url, accept_timeout=2)
    assert (await endpoint.post(BODY))[0] == 202
    private_rabbit.kill()
    status, headers, answer = await endpoint.post(BODY)
    assert (status, headers["Retry-After"], answer) == (
        503,
        "5",
        {"error": "not accepted, retry later"},
    )


async def test_503_while_a_memory_alarm_blocks_publishing_then_202_again(
    start: Start, private_rabbit: PrivateRabbit
) -> None:
    endpoint = await start(url=private_rabbit.url, accept_timeout=2)
    assert (await endpoint.post(BODY))[0] == 202
    private_rabbit.ctl("set_vm_memory_high_watermark", "0")
    try:
        blocked = await endpoint.post(BODY)
    finally:
        private_rabbit.ctl("set_vm_memory_high_watermark", "0.4")
    assert blocked[0] == 503
    for _ in range(50):
        if (await endpoint.post(BODY))[0] == 202:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the endpoint did not accept again after the alarm")
