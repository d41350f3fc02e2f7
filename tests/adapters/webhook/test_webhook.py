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
from pydantic import ValidationError

from adapters.webhook import WebhookSource
from adapters.webhook.settings import WebhookSourceSettings
from esb import (
    Broker,
    BrokerSettings,
    BrokerUnavailable,
    CloudEvent,
    ConfigError,
    Metrics,
    from_message,
)
from esb.limits import DEFAULT_MAX_BODY_BYTES
from esb.runtime import BrokerEmitter
from esb.testing import MemoryBus
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

    async def post_raw(self, body: bytes, headers: dict[str, bytes]) -> tuple[int, Any]:
        """POST with header bytes as given (non-ASCII, invalid UTF-8), which aiohttp's client
        would not send."""
        port = self.source.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [b"POST /webhook HTTP/1.1", f"Host: 127.0.0.1:{port}".encode()]
        lines += [name.encode() + b": " + value for name, value in headers.items()]
        lines += [f"Content-Length: {len(body)}".encode(), b"Connection: close"]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        head, _, payload = answer.partition(b"\r\n\r\n")
        return int(head.split()[1]), orjson.loads(payload)

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

    async def go(
        url: str = amqp_url, bus_max_body_bytes: int | None = None, **overrides: Any
    ) -> Endpoint:
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
        emitter = BrokerEmitter(broker, asyncio.Event())
        if bus_max_body_bytes is not None:  # what the runtime is to tell sources (report)
            emitter.max_body_bytes = bus_max_body_bytes
        source = WebhookSource(settings, emitter)
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


def shopify_signature(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def stripe_signature(body: bytes, at: int, secret: str = SECRET) -> str:
    signed = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={signed}"


STANDARD_KEY = b"0123456789abcdef0123456789abcdef"
STANDARD_SECRET = "whsec_" + base64.b64encode(STANDARD_KEY).decode()


def standard_headers(body: bytes, webhook_id: str, at: int | None = None) -> dict[str, str]:
    now = str(at if at is not None else int(time.time()))
    signed = hmac.new(STANDARD_KEY, f"{webhook_id}.{now}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": now,
        "webhook-signature": "v1," + base64.b64encode(signed).decode(),
    }


async def test_a_signed_github_delivery_is_published_once_under_an_id_bound_to_its_body(
    start: Start,
) -> None:
    """The delivery id header is not signed: the event id is a keyed hash of the event type and
    the signed body, and the delivery id rides along as the deliveryid extension."""
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
    expected_id = hmac.new(
        SECRET.encode(), b"esb.webhook.event-id\x00github.push\x00" + BODY, hashlib.sha256
    ).hexdigest()
    assert (status, answer) == (202, {"id": expected_id, "status": "accepted"})
    again, _, answer = await endpoint.post(BODY, **headers)
    assert (again, answer) == (200, {"id": expected_id, "status": "duplicate"})
    [event] = await endpoint.events()
    assert (event.id, event.type, event.data) == (expected_id, "github.push", orjson.loads(BODY))
    assert event.extensions == {"deliveryid": "d-1"}


async def test_a_github_body_replayed_under_a_fresh_delivery_id_is_a_duplicate(
    start: Start,
) -> None:
    """X-GitHub-Delivery is not signed: a captured body posted again under the same topic and a
    new delivery id is the same event (200 duplicate), not a new one."""
    endpoint = await start(
        signature="github",
        secret=SECRET,
        event_type_header="X-GitHub-Event",
        type_prefix="github.",
        id_header="X-GitHub-Delivery",
    )
    signed = {"X-Hub-Signature-256": github_signature(BODY)}
    first = await endpoint.post(
        BODY, **signed, **{"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"}
    )
    assert first[0] == 202
    status, _, answer = await endpoint.post(
        BODY, **signed, **{"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-2"}
    )
    assert (status, answer) == (200, {"id": first[2]["id"], "status": "duplicate"})
    [event] = await endpoint.events()
    assert (event.type, event.extensions) == ("github.push", {"deliveryid": "d-1"})


async def test_shopify_topics_sent_with_identical_bodies_are_each_published(
    start: Start,
) -> None:
    """Shopify sends orders/create, orders/paid and orders/updated with byte-identical bodies:
    the type is part of the id, so each is an event of its own (202), none lost as a duplicate;
    a body replayed under a fresh webhook id and the same topic is still a duplicate."""
    endpoint = await start(
        signature="shopify",
        secret=SECRET,
        event_type_header="X-Shopify-Topic",
        type_prefix="shop.",
        id_header="X-Shopify-Webhook-Id",
    )
    signed = {"X-Shopify-Hmac-Sha256": shopify_signature(BODY)}
    topics = ["orders/create", "orders/paid", "orders/updated"]
    ids = []
    for n, topic in enumerate(topics):
        headers = {"X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": f"w-{n}"}
        status, _, answer = await endpoint.post(BODY, **signed, **headers)
        assert (status, answer["status"]) == (202, "accepted")
        ids.append(answer["id"])
    replay = {"X-Shopify-Topic": "orders/paid", "X-Shopify-Webhook-Id": "w-9"}
    status, _, answer = await endpoint.post(BODY, **signed, **replay)
    assert (status, answer) == (200, {"id": ids[1], "status": "duplicate"})
    events = await endpoint.events()
    assert [(e.id, e.type, e.extensions) for e in events] == [
        (ids[0], "shop.orders.create", {"deliveryid": "w-0"}),
        (ids[1], "shop.orders.paid", {"deliveryid": "w-1"}),
        (ids[2], "shop.orders.updated", {"deliveryid": "w-2"}),
    ]
    assert len(set(ids)) == 3


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
    endpoint = await start(signature="standard", secret=STANDARD_SECRET, id_header="webhook-id")
    headers = standard_headers(BODY, "msg_1")
    headers["webhook-signature"] = "v1,bogus " + headers["webhook-signature"]
    assert (await endpoint.post(BODY, **headers))[0] == 202
    headers["webhook-signature"] = "v1,bogus"
    assert (await endpoint.post(BODY, **headers))[0] == 401
    [event] = await endpoint.events()
    assert event.id == "msg_1"


async def test_a_standard_delivery_replayed_within_the_tolerance_is_a_duplicate_by_default(
    start: Start,
) -> None:
    """Without id_header, the signed webhook-id is the event id: a replay is not re-published."""
    endpoint = await start(signature="standard", secret=STANDARD_SECRET)
    headers = standard_headers(BODY, "msg_7")
    assert (await endpoint.post(BODY, **headers))[:3:2] == (
        202,
        {"id": "msg_7", "status": "accepted"},
    )
    assert (await endpoint.post(BODY, **headers))[:3:2] == (
        200,
        {"id": "msg_7", "status": "duplicate"},
    )
    assert [e.id for e in await endpoint.events()] == ["msg_7"]


def test_standard_refuses_an_unsigned_id_header() -> None:
    with pytest.raises(ValidationError, match="the event id is the signed webhook-id"):
        WebhookSourceSettings(signature="standard", secret=STANDARD_SECRET, id_header="X-Id")


async def test_a_stripe_event_resent_with_a_fresh_signature_is_a_duplicate(start: Start) -> None:
    """Stripe's event id is in the signed body; a retry (or a replay within the tolerance) signs
    the same body at another time and is the same event."""
    endpoint = await start(signature="stripe", secret=SECRET, event_type_field="type")
    body = orjson.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "data": {}})
    now = int(time.time())
    first = await endpoint.post(body, **{"Stripe-Signature": stripe_signature(body, now)})
    again = await endpoint.post(body, **{"Stripe-Signature": stripe_signature(body, now - 60)})
    assert (first[0], first[2], again[0]) == (202, {"id": "evt_1", "status": "accepted"}, 200)
    [event] = await endpoint.events()
    assert (event.id, event.type) == ("evt_1", "payment_intent.succeeded")


async def test_twenty_concurrent_copies_of_one_delivery_are_published_once(start: Start) -> None:
    """Copies arriving while the first is being published wait for its confirm, then answer
    200 duplicate: one 202, one message."""
    endpoint = await start(signature="standard", secret=STANDARD_SECRET)
    headers = standard_headers(BODY, "msg_race")
    answers = await asyncio.gather(*(endpoint.post(BODY, **headers) for _ in range(20)))
    assert sorted(status for status, _, _ in answers) == [200] * 19 + [202]
    assert {answer["id"] for _, _, answer in answers} == {"msg_race"}
    assert [e.id for e in await endpoint.events()] == ["msg_race"]


async def test_copies_waiting_on_a_delivery_that_failed_publish_it_themselves(
    start: Start,
) -> None:
    """If the first copy is not confirmed (503), a waiting copy publishes instead of answering
    duplicate for an event that never reached the bus."""
    endpoint = await start(signature="standard", secret=STANDARD_SECRET)
    emit = endpoint.source.emit
    calls = 0

    async def fail_first(event: CloudEvent) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.2)
            raise BrokerUnavailable("no confirm")
        await emit(event)

    endpoint.source.emit = fail_first  # type: ignore[method-assign]
    headers = standard_headers(BODY, "msg_retry")
    answers = await asyncio.gather(*(endpoint.post(BODY, **headers) for _ in range(5)))
    assert sorted(status for status, _, _ in answers) == [200, 200, 200, 202, 503]
    assert [e.id for e in await endpoint.events()] == ["msg_retry"]


async def test_a_non_ascii_or_non_utf8_signature_header_is_401_not_500(start: Start) -> None:
    github = await start(signature="github", secret=SECRET)
    for value in ("sha256=é".encode(), b"sha256=\xff\xfe", "🔑".encode()):
        status, answer = await github.post_raw(BODY, {"X-Hub-Signature-256": value})
        assert (status, answer) == (401, {"error": "X-Hub-Signature-256 does not match"})
    standard = await start(signature="standard", secret=STANDARD_SECRET)
    headers = {k: v.encode() for k, v in standard_headers(BODY, "msg_1").items()}
    for name, value in [
        ("webhook-signature", "v1,é".encode()),
        ("webhook-id", b"\xffmsg"),
        ("webhook-timestamp", ("\u0661\u0667" + "\u0660" * 8).encode()),  # int() takes these
        ("webhook-timestamp", b"9" * 5000),
    ]:
        status, answer = await standard.post_raw(BODY, {**headers, name: value})
        assert status == 401, answer
    assert await github.events() == []
    assert await standard.events() == []


async def test_the_structured_content_type_is_case_insensitive(start: Start) -> None:
    endpoint = await start()
    event = CloudEvent.new("crm.deal.won", "urn:crm", {"deal": 7}, id="ce-9")
    content_type = "Application/CloudEvents+JSON; charset=utf-8"
    assert (await endpoint.post(event.to_structured(), **{"Content-Type": content_type}))[0] == 202
    [received] = await endpoint.events()
    assert (received.id, received.type, received.data) == ("ce-9", "crm.deal.won", {"deal": 7})


async def test_binary_mode_is_refused_under_a_signature_that_does_not_cover_its_headers(
    start: Start,
) -> None:
    endpoint = await start(signature="github", secret=SECRET)
    headers = {"ce-id": "x", "ce-source": "urn:x", "ce-type": "a.b", "ce-specversion": "1.0"}
    status, _, answer = await endpoint.post(
        BODY, **headers, **{"X-Hub-Signature-256": github_signature(BODY)}
    )
    assert status == 400
    assert "ce- headers are not covered by the github signature" in answer["error"]
    assert await endpoint.events() == []


@pytest.mark.parametrize(
    "topic", ["orders/#", "orders.*", "orders create", "", "a..b", "x" * 251, "commandes/crée"]
)
async def test_a_type_header_that_is_not_topic_words_is_400(start: Start, topic: str) -> None:
    """The type is the routing key: no wildcard, space, empty word or over 255 bytes gets in."""
    endpoint = await start(event_type_header="X-Shopify-Topic", type_prefix="shop.")
    status, _, answer = await endpoint.post(BODY, **{"X-Shopify-Topic": topic})
    assert status == 400
    assert answer["error"].startswith("X-Shopify-Topic: ")
    assert await endpoint.events() == []


async def test_ids_and_depths_beyond_the_limits_are_400_not_500(start: Start) -> None:
    """What AMQP cannot carry or consumers would park is refused at the edge with the reason."""
    standard = await start(signature="standard", secret=STANDARD_SECRET)
    status, _, answer = await standard.post(BODY, **standard_headers(BODY, "m" * 256))
    assert (status, answer["error"].split(":")[0]) == (400, "webhook-id")
    plain = await start()
    long_id = CloudEvent.new("a.b", "urn:x", {}, id="i" * 200).to_structured()
    long_id = long_id.replace(b'"' + b"i" * 200 + b'"', b'"' + b"i" * 300 + b'"')
    assert (await plain.post(long_id, **{"Content-Type": "application/cloudevents+json"}))[0] == 400
    for depth in (65, 300):
        status, _, answer = await plain.post(b"[" * depth + b"]" * depth)
        assert status == 400, answer
    assert await standard.events() == []
    assert await plain.events() == []


async def test_a_body_that_grows_past_the_bus_limit_when_encoded_is_413(start: Start) -> None:
    """1e15 is re-encoded as 1000000000000000.0: the published body, not the request's, must
    fit what consumers accept."""
    endpoint = await start(max_body_bytes=4096, bus_max_body_bytes=4096)
    body = b"[" + b"1e15," * 800 + b"1]"
    assert len(body) < 4096
    status, _, answer = await endpoint.post(body)
    assert (status, answer) == (413, {"error": "body over 4096 bytes"})
    assert await endpoint.events() == []


def test_a_body_limit_above_what_consumers_accept_is_refused_at_startup() -> None:
    """The default bus limit holds unless the emitter says the bus takes more."""
    settings = WebhookSourceSettings(max_body_bytes=DEFAULT_MAX_BODY_BYTES + 1)
    with pytest.raises(ConfigError, match=r"max_body_bytes 1048577 is more than consumers accept"):
        WebhookSource(settings, MemoryBus())
    assert WebhookSource(settings, MemoryBus(max_body_bytes=4 * DEFAULT_MAX_BODY_BYTES))


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
