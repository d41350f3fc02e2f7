"""The http-poll source against a real HTTP server (aiohttp) that pages, fails and rate-limits,
publishing to a real RabbitMQ."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from pydantic import ValidationError

from adapters.http_poll import ADAPTER, HttpPollSource
from adapters.http_poll.settings import HttpPollSettings
from esb import Broker, BrokerSettings, CloudEvent, Metrics, from_message
from esb.runtime import BrokerEmitter
from esb.testing import free_port
from esb.topology import QueueSpec, declare_queue

TOKEN = "s3cr3t"  # the bearer token the API accepts
T1, T2, T3 = "2026-11-24T10:00:00Z", "2026-11-24T11:00:00Z", "2026-11-24T12:00:00Z"


@dataclass
class Api:
    """A contacts API: ``updated_since`` answered with ``>=`` (as most are), three items a
    page, paged by a next link in the body, a Link header or page numbers; or a cursor token.
    ``script`` holds answers (status, headers, body) given before the real ones."""

    style: str = "next_field"
    page_size: int = 3
    items: list[dict[str, Any]] = field(default_factory=list)
    script: deque[tuple[int, dict[str, str], bytes]] = field(default_factory=deque)
    requests: list[tuple[float, dict[str, str], str | None]] = field(default_factory=list)
    base: str = ""

    def add(self, number: int, updated_at: str) -> None:
        self.items = [i for i in self.items if i["id"] != number]
        self.items.append({"id": number, "name": f"Contact {number}", "updated_at": updated_at})

    async def handle(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.requests.append((time.monotonic(), query, request.headers.get("Authorization")))
        if self.script:
            status, headers, body = self.script.popleft()
            return web.Response(status=status, headers=headers, body=body)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        ordered = sorted(self.items, key=lambda i: (i["updated_at"], i.get("id", 0)))
        if self.style == "token":
            start = int(query.get("cursor", "0"))
            chunk = ordered[start : start + self.page_size]
            token = str(start + len(chunk))
            return web.json_response({"data": chunk, "meta": {"next_cursor": token}})
        since = query.get("updated_since")
        if since is not None:
            ordered = [i for i in ordered if i["updated_at"] >= since]
        if self.style == "page_param":
            start = (int(query["page"]) - 1) * self.page_size
        else:
            start = int(query.get("offset", "0"))
        chunk = ordered[start : start + self.page_size]
        following = start + self.page_size < len(ordered)
        link = f"/contacts?updated_since={since or ''}&offset={start + self.page_size}"
        body: dict[str, Any] = {"data": chunk}
        headers = {}
        if following and self.style == "next_field":
            body["links"] = {"next": link}
        if following and self.style == "link_header":
            headers["Link"] = f'<{self.base}{link}>; rel="next"'
        return web.json_response(body, headers=headers)


@dataclass
class Harness:
    api: Api
    url: str
    broker: Broker
    queue: str
    cursor_file: Path
    received: list[CloudEvent] = field(default_factory=list)

    def source(self, **overrides: Any) -> HttpPollSource:
        pagination: dict[str, Any] = {
            "next_field": {"next_field": "links.next"},
            "link_header": {"link_header": True},
            "page_param": {"page_param": "page"},
            "token": {},
        }[self.api.style]
        cursor: dict[str, Any] = (
            {"token_param": "cursor", "token_field": "meta.next_cursor"}
            if self.api.style == "token"
            else {"since_param": "updated_since", "cursor_field": "updated_at"}
        )
        settings = HttpPollSettings.model_validate(
            {
                "url": self.url,
                "items_field": "data",
                "event_type": "crm.contact.changed",
                "auth": {"kind": "bearer", "token": TOKEN},
                "cursor_file": self.cursor_file,
                "poll_seconds": 0.1,
                "backoff_seconds": 0.05,
                "backoff_max_seconds": 0.2,
                **pagination,
                **cursor,
                **overrides,
            }
        )
        return HttpPollSource(settings, BrokerEmitter(self.broker, asyncio.Event()))

    async def take(self) -> list[CloudEvent]:
        """The events published since the last call."""
        queue = await self.broker.channel.declare_queue(self.queue, passive=True)
        found = []
        while (message := await queue.get(fail=False, timeout=5)) is not None:
            found.append(from_message(message))
            await message.ack()
        self.received += found
        return found

    async def run_until(self, source: HttpPollSource, done: Callable[[], Awaitable[bool]]) -> None:
        """Run the source as the runtime does until ``done()``, then a few idle polls more."""
        await source.open()
        task = asyncio.create_task(source.run())
        try:
            deadline = time.monotonic() + 10
            while not await done():
                assert not task.done(), task.exception()
                assert time.monotonic() < deadline, "timed out"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert not task.done(), task.exception()
        finally:
            source.stopping.set()
            await asyncio.wait_for(task, 5)
            await source.close()

    async def run_until_events(self, source: HttpPollSource, count: int) -> list[CloudEvent]:
        """Run the source until ``count`` events arrived; every event published by then."""
        seen: list[CloudEvent] = []

        async def enough() -> bool:
            seen.extend(await self.take())
            return len(seen) >= count

        await self.run_until(source, enough)
        return seen + await self.take()


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start(amqp_url: str, tmp_path: Path) -> AsyncIterator[Start]:
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def go(style: str = "next_field") -> Harness:
        api = Api(style=style)
        app = web.Application()
        app.router.add_get("/contacts", api.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        api.base = f"http://127.0.0.1:{port}"
        cleanups.append(runner.cleanup)
        prefix = f"esbt-{uuid.uuid4().hex[:10]}"
        broker = Broker(
            BrokerSettings.model_validate({"url": amqp_url, "exchange": f"{prefix}.events"}),
            "http-poll-test",
            Metrics(),
        )
        await broker.connect()
        queue = f"{prefix}.q"
        await declare_queue(broker.channel, QueueSpec(queue, ["#"]), broker.settings)

        async def clean() -> None:
            channel = await broker.connection.channel()
            await channel.queue_delete(queue)
            await channel.queue_delete(queue + ".dlq")
            await channel.exchange_delete(broker.settings.exchange)
            await broker.close()

        cleanups.append(clean)
        return Harness(api, f"{api.base}/contacts", broker, queue, tmp_path / "contacts.json")

    yield go
    for cleanup in reversed(cleanups):
        await cleanup()


def numbers(events: list[CloudEvent]) -> list[int]:
    return [e.data["id"] for e in events]


@pytest.mark.parametrize("style", ["next_field", "link_header", "page_param"])
async def test_every_page_is_published_in_order_and_a_restart_neither_skips_nor_repeats(
    start: Start, style: str
) -> None:
    """Seven items in pages of three; then a restart after one more at the cursor's own time
    (the API answers >=, so the items at the cursor come back), a new one and a changed one:
    exactly those three are published, once each."""
    h = await start(style)
    for n in range(1, 6):
        h.api.add(n, T1)
    h.api.add(6, T2)
    h.api.add(7, T2)
    first = h.source()
    assert numbers(await h.run_until_events(first, 7)) == [1, 2, 3, 4, 5, 6, 7]
    kept = orjson.loads(h.cursor_file.read_bytes())
    assert (kept["since"], kept["seen"], kept["next"], kept["page"]) == (T2, ["6", "7"], None, None)
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in h.api.requests)

    h.api.add(8, T2)
    h.api.add(9, T3)
    h.api.add(2, T3)  # changed: a new event under a new id
    again = h.source()
    assert numbers(await h.run_until_events(again, 3)) == [8, 2, 9]
    ids = [e.id for e in h.received]
    assert len(ids) == len(set(ids)) == 10
    assert h.received[-2].id == f"crm.contact.changed:2:{T3}"
    assert h.received[-2].subject == "2"


async def test_a_restart_in_the_middle_of_a_walk_resumes_at_the_next_page(start: Start) -> None:
    """The next page's link is kept with the cursor once a page is confirmed: one poll, a
    restart, and the second page is asked for, not the first again."""
    h = await start("next_field")
    for n in range(1, 8):
        h.api.add(n, T1)
    first = h.source()
    await first.open()
    try:
        batch = await first.poll_batch()
    finally:
        await first.close()
    assert (numbers(await h.take()), batch.more) == ([1, 2, 3], True)
    assert orjson.loads(h.cursor_file.read_bytes())["next"].endswith("offset=3")
    assert numbers(await h.run_until_events(h.source(), 4)) == [4, 5, 6, 7]
    assert h.api.requests[1][1]["offset"] == "3"


async def test_a_cursor_token_from_the_answer_is_sent_with_the_next_poll(start: Start) -> None:
    h = await start("token")
    for n in range(1, 6):
        h.api.add(n, T1)
    assert numbers(await h.run_until_events(h.source(), 5)) == [1, 2, 3, 4, 5]
    assert orjson.loads(h.cursor_file.read_bytes())["token"] == "5"
    h.api.add(6, T2)
    assert numbers(await h.run_until_events(h.source(), 1)) == [6]
    assert h.api.requests[-1][1]["cursor"] == "6"


async def test_a_503_is_retried_with_backoff_until_the_api_answers(start: Start) -> None:
    h = await start()
    h.api.add(1, T1)
    h.api.script.extend([(503, {}, b"maintenance"), (503, {}, b"maintenance")])
    source = h.source()
    assert numbers(await h.run_until_events(source, 1)) == [1]
    assert source.counted["poll", "failed"] == 2
    assert source.counted["response", "5xx"] == 2
    assert source.failures == 0
    gaps = [b[0] - a[0] for a, b in zip(h.api.requests[:2], h.api.requests[1:3], strict=True)]
    assert all(gap >= 0.04 for gap in gaps)  # backoff_seconds 0.05, jitter only adds


async def test_a_429_waits_as_long_as_retry_after_says(start: Start) -> None:
    """backoff_seconds is 0.05 and its cap 0.2: only the Retry-After explains a 1 s wait."""
    h = await start()
    h.api.add(1, T1)
    h.api.script.append((429, {"Retry-After": "1"}, b"slow down"))
    source = h.source()
    assert numbers(await h.run_until_events(source, 1)) == [1]
    asked, next_one = h.api.requests[0][0], h.api.requests[1][0]
    assert next_one - asked >= 0.95
    assert source.counted["poll", "failed"] == 1


async def test_a_refused_credential_is_one_line_error_and_polled_again(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    h = await start()
    h.api.add(1, T1)
    h.api.script.append((401, {}, b'{"error":\n "token revoked"}'))
    assert numbers(await h.run_until_events(h.source(), 1)) == [1]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "HTTP 401: http-poll: GET http://127.0.0.1:" in errors[0]
    assert "token revoked" in errors[0]
    assert "\n" not in errors[0]
    assert TOKEN not in caplog.text


async def test_malformed_pages_and_items_are_refused_counted_and_not_fatal(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """A page that is not JSON, two without a list of items, one over max_page_bytes, one
    nested deeper than the envelope allows, and on
    the good page an item without an id: each is refused with its reason, the source goes on
    and publishes the rest."""
    h = await start()
    h.api.add(1, T1)
    h.api.add(2, T1)
    h.api.items.append({"name": "no id", "updated_at": T1})
    h.api.script.extend(
        [
            (200, {}, b"<html>Bad gateway</html>"),
            (200, {}, b'{"data": {"oops": 1}}'),
            (200, {}, b'{"data": null}'),
            (200, {}, b'{"data": [' + b'{"id": 1},' * 400 + b'{"id": 2}]}'),
            (200, {}, b"[" * 200 + b"]" * 200),
        ]
    )
    source = h.source(max_page_bytes=4_000)
    assert numbers(await h.run_until_events(source, 2)) == [1, 2]
    assert source.refused == {
        "invalid_json": 1,
        "invalid_page": 2,
        "too_large": 1,
        "too_deep": 1,
        "invalid_item": 1,
    }
    assert "data is not a list (dict)" in caplog.text
    assert "data is not a list (missing)" in caplog.text
    assert "item 0: id: is absent or not text or a number" in caplog.text


@pytest.mark.parametrize(
    ("style", "link", "why"),
    [
        ("next_field", "http://198.51.100.7/steal", "is at another origin (http://198.51.100.7/"),
        (
            "next_field",
            "http://user:pw@API/contacts",
            "carries a user or password (http://user:***@",
        ),
        ("next_field", "http://[::1/contacts", "is not a URL: 'http://[::1/contacts'"),
        ("link_header", '<http://[::1>; rel="next"', "the Link header holds no valid URL"),
        ("link_header", '<http://a:b@API/x>; rel="next"', "carries a user or password"),
        ("next_field", "http://API/contacts", "points back to the page it is on"),
        ("link_header", '<http://API/contacts>; rel="next"', "points back to the page it is on"),
    ],
)
async def test_a_next_link_that_could_send_credentials_elsewhere_is_refused_and_the_walk_ends(
    start: Start, caplog: pytest.LogCaptureFixture, style: str, link: str, why: str
) -> None:
    """The page's items are published, the link is refused (counted) and never asked for; the
    next walk starts at the cursor after them, so nothing is lost or published twice."""
    h = await start(style)
    h.api.add(1, T1)
    h.api.add(2, T2)
    link = link.replace("API", h.api.base.removeprefix("http://"))
    body: dict[str, Any] = {"data": [h.api.items[0]]}
    headers = {"Link": link} if style == "link_header" else {}
    if style == "next_field":
        body["links"] = {"next": link}
    h.api.script.append((200, headers, orjson.dumps(body)))
    source = h.source()
    assert numbers(await h.run_until_events(source, 2)) == [1, 2]
    assert source.refused == {"invalid_link": 1}
    assert f"the next-page link {why}" in caplog.text
    assert "pw" not in caplog.text
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in h.api.requests[1:])
    assert h.api.requests[1][1]["updated_since"] == T1  # a new walk, from the page's cursor


async def test_an_interim_status_as_the_answer_is_a_failed_poll_not_a_page(start: Start) -> None:
    h = await start()
    h.api.add(1, T1)
    h.api.script.append((101, {}, b""))
    source = h.source()
    assert numbers(await h.run_until_events(source, 1)) == [1]
    assert (source.counted["poll", "failed"], source.refused) == (1, {})


async def test_a_retry_after_beyond_its_cap_waits_only_the_cap(start: Start) -> None:
    h = await start()
    h.api.add(1, T1)
    h.api.script.append((503, {"Retry-After": "99999999"}, b"later"))
    source = h.source(retry_after_max_seconds=0.5)
    assert numbers(await h.run_until_events(source, 1)) == [1]
    asked, next_one = h.api.requests[0][0], h.api.requests[1][0]
    assert 0.45 <= next_one - asked < 3


def test_settings_need_one_cursor_and_at_most_one_pagination() -> None:
    base = {"url": "https://api.example.com/x", "event_type": "x.changed"}
    with pytest.raises(ValidationError, match="choose one cursor"):
        HttpPollSettings.model_validate(base)
    with pytest.raises(ValidationError, match="since_param needs cursor_field"):
        HttpPollSettings.model_validate({**base, "since_param": "since"})
    with pytest.raises(ValidationError, match="needs both token_param and token_field"):
        HttpPollSettings.model_validate({**base, "token_param": "cursor"})
    with pytest.raises(ValidationError, match="at most one pagination"):
        HttpPollSettings.model_validate(
            {**base, "token_param": "c", "token_field": "c", "link_header": True, "page_param": "p"}
        )
    with pytest.raises(ValidationError, match="not an http"):
        HttpPollSettings.model_validate({**base, "url": "file:///etc/passwd"})
    with pytest.raises(ValidationError, match="backoff_max_seconds must be at least"):
        HttpPollSettings.model_validate(
            {**base, "token_param": "c", "token_field": "c", "backoff_max_seconds": 0.1}
        )


def test_the_adapter_offers_the_source_as_http_poll() -> None:
    assert (ADAPTER.name, ADAPTER.source, ADAPTER.sink) == ("http-poll", HttpPollSource, None)


async def test_more_items_of_one_cursor_value_than_it_remembers_never_poll_in_a_loop(
    start: Start, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk update gives more items one ``updated_at`` than the ids kept with the cursor:
    the ones forgotten come back each walk, but the next walk waits ``poll_seconds``."""
    monkeypatch.setattr("adapters.http_poll.source.MAX_SEEN", 2)
    harness = await start()
    for number in range(1, 7):
        harness.api.add(number, T1)
    began = time.monotonic()
    await harness.run_until(
        harness.source(poll_seconds=30), lambda: asyncio.sleep(0, time.monotonic() - began > 1.5)
    )
    # The first walk (two pages), then one more at once as the cursor moved to T1; no third.
    assert len(harness.api.requests) == 4, harness.api.requests
    assert "over 2 items share the cursor value" in caplog.text


@pytest.mark.parametrize("style", ["next_field", "page_param", "token"])
async def test_an_api_that_never_ends_a_walk_is_asked_max_walk_pages_then_waits_a_poll(
    start: Start, caplog: pytest.LogCaptureFixture, style: str
) -> None:
    """Links that go round in a circle, a page number the API ignores, a token that changes
    forever: each walk stops after ``max_walk_pages`` pages, refused as ``walk_too_long``,
    and the next one waits ``poll_seconds``."""
    h = await start(style)
    h.api.add(1, T1)
    for number in range(20):
        body: dict[str, Any] = {"data": [h.api.items[0]]}
        if style == "next_field":  # two pages linking to each other
            body["links"] = {"next": f"/contacts?offset={3 * (number % 2)}"}
        if style == "token":
            body["meta"] = {"next_cursor": f"t{number}"}
        h.api.script.append((200, {}, orjson.dumps(body)))
    began = time.monotonic()
    source = h.source(max_walk_pages=4, poll_seconds=30)
    await h.run_until(source, lambda: asyncio.sleep(0, time.monotonic() - began > 1.5))
    assert len(h.api.requests) == 4, h.api.requests
    assert source.refused == {"walk_too_long": 1}
    assert "4 pages asked for one after another (max_walk_pages)" in caplog.text
    # The same item on every page, under one id (sinks skip the copies).
    expected = "crm.contact.changed:1" + ("" if style == "token" else f":{T1}")
    assert {e.id for e in await h.take()} == {expected}
