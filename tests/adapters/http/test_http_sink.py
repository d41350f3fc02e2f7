"""The REST sink against a real HTTP server started by the test."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from adapters.http import HttpSink
from adapters.http.settings import HttpSinkSettings
from esb import CloudEvent, PermanentError, TransientError
from esb.testing import free_port


@dataclass
class Target:
    """A small API: records every request and answers as the test says."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    delay: float = 0.0
    in_flight: int = 0
    most_in_flight: int = 0
    tokens_issued: int = 0


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Target]:
    """A Target API on a port of its own (its own origin)."""
    port = free_port()
    state = Target(f"http://127.0.0.1:{port}")

    async def api(request: web.Request) -> web.Response:
        state.in_flight += 1
        state.most_in_flight = max(state.most_in_flight, state.in_flight)
        try:
            await asyncio.sleep(state.delay)
            state.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "raw_path": request.raw_path,
                    "headers": dict(request.headers),
                    "body": await request.read(),
                }
            )
            if state.answers:
                status, headers, text = state.answers.pop(0)
                return web.Response(status=status, headers=headers, text=text)
            return web.json_response({"ok": True}, status=201)
        finally:
            state.in_flight -= 1

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        assert form["grant_type"] == "client_credentials"
        state.tokens_issued += 1
        return web.json_response({"access_token": f"tok-{state.tokens_issued}", "expires_in": 3600})

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_route("*", "/{tail:.*}", api)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    async with serving() as state:
        yield state


@pytest.fixture
async def elsewhere() -> AsyncIterator[Target]:
    """Another origin, where a redirect from the target may point."""
    async with serving() as state:
        yield state


async def sink(**settings: Any) -> HttpSink:
    http = HttpSink(HttpSinkSettings.model_validate(settings))
    await http.open()
    return http


ORDER = CloudEvent.new(
    "shop.order.paid", "urn:shop", {"reference": "SO 1/2", "total": 5}, id="evt-1"
)


async def test_posts_the_data_with_idempotency_key_and_bearer_token(target: Target) -> None:
    http = await sink(
        url=target.url + "/shipments/{data.reference}",
        auth={"kind": "bearer", "token": "T0k3n"},
        headers={"X-Tenant": "acme"},
    )
    await http.write(ORDER)
    await http.close()
    [request] = target.requests
    assert (request["method"], request["path"]) == ("POST", "/shipments/SO 1/2")
    assert request["headers"]["Idempotency-Key"] == "evt-1"
    assert request["headers"]["Authorization"] == "Bearer T0k3n"
    assert request["headers"]["X-Tenant"] == "acme"
    assert request["body"] == b'{"reference": "SO 1/2", "total": 5}'


async def test_basic_and_api_key_auth(target: Target) -> None:
    http = await sink(
        url=target.url + "/a", auth={"kind": "basic", "username": "u", "password": "p"}
    )
    await http.write(ORDER)
    await http.close()
    http = await sink(
        url=target.url + "/b",
        method="PUT",
        auth={"kind": "api_key", "header": "X-API-Key", "key": "k-1"},
    )
    await http.write(ORDER)
    await http.close()
    assert target.requests[0]["headers"]["Authorization"] == "Basic dTpw"
    assert (target.requests[1]["method"], target.requests[1]["headers"]["X-API-Key"]) == (
        "PUT",
        "k-1",
    )


async def test_oauth2_token_is_fetched_once_and_refreshed_on_401(target: Target) -> None:
    http = await sink(
        url=target.url + "/c",
        auth={
            "kind": "oauth2",
            "token_url": target.url + "/oauth/token",
            "client_id": "esb",
            "client_secret": "s3cret",
        },
    )
    for _ in range(3):
        await http.write(ORDER)
    target.answers.append((401, {}, "expired"))
    await http.write(ORDER)
    await http.close()
    tokens = [r["headers"]["Authorization"] for r in target.requests]
    assert tokens == ["Bearer tok-1"] * 4 + ["Bearer tok-2"]
    assert target.tokens_issued == 2


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (503, {}, TransientError, None),
        (429, {"Retry-After": "30"}, TransientError, 30.0),
        (408, {}, TransientError, None),
        (422, {}, PermanentError, None),
        (404, {}, PermanentError, None),
    ],
)
async def test_answers_are_classified(
    target: Target,
    status: int,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    target.answers.append((status, headers, "the target's reason"))
    http = await sink(url=target.url + "/d")
    with pytest.raises(error) as caught:
        await http.write(ORDER)
    await http.close()
    assert str(caught.value) == f"HTTP {status}: POST {target.url}/d: the target's reason"
    assert getattr(caught.value, "retry_after", None) == retry_after
    assert http.counted == {("response", f"{status // 100}xx"): 1}


async def test_timeouts_and_refused_connections_are_transient(target: Target) -> None:
    target.delay = 1.0
    http = await sink(url=target.url + "/slow", timeout=0.2)
    with pytest.raises(TransientError, match=r"no answer within 0\.2 s"):
        await http.write(ORDER)
    await http.close()
    assert http.counted == {("response", "timeout"): 1}
    http = await sink(url=f"http://127.0.0.1:{free_port()}/nobody")
    with pytest.raises(TransientError, match=r"POST http://127\.0\.0\.1"):
        await http.write(ORDER)
    await http.close()
    assert http.counted == {("response", "error"): 1}


async def test_a_missing_url_field_parks_the_event_unsent(target: Target) -> None:
    """Absent, null or under a non-object: one rule, and the words every template uses."""
    http = await sink(url=target.url + "/orders/{data.reference.id}")
    for data in ({}, {"reference": None}, {"reference": {"id": None}}, {"reference": "SO-1"}):
        with pytest.raises(PermanentError, match=r"^url: the event has no data\.reference\.id$"):
            await http.write(ORDER.model_copy(update={"data": data}))
    await http.close()
    assert target.requests == []


def test_an_unknown_url_placeholder_is_refused_when_the_settings_load() -> None:
    """It was sent as it stood, or refused per event ({time}), instead of failing at start."""
    for url in ("https://x.example/{time}", "https://x.example/{data.a b}"):
        with pytest.raises(ValidationError, match=r"unknown placeholder \{.*\}: use \{id\}"):
            HttpSinkSettings(url=url)


async def test_concurrency_and_rate_are_bounded(target: Target) -> None:
    target.delay = 0.1
    http = await sink(url=target.url + "/e", concurrency=3)
    await asyncio.gather(*(http.write(ORDER) for _ in range(9)))
    await http.close()
    assert target.most_in_flight == 3

    target.delay = 0
    http = await sink(url=target.url + "/f", rate_limit=5)
    started = time.monotonic()
    await asyncio.gather(*(http.write(ORDER) for _ in range(15)))
    await http.close()
    assert time.monotonic() - started >= 1.5  # 5 at once, then 10 more at 5 per second


@pytest.mark.parametrize(
    "value", ["..", ".", "", "..;", "..;x", "../admin", "a/../../admin", "..\\admin", "x;."]
)
async def test_a_value_that_would_move_the_path_parks_the_event_unsent(
    target: Target, value: str
) -> None:
    """A .. once reached /api/items instead of /api/orders/<ref>/items; ``..;`` went out as
    ``..;`` (Tomcat and Jetty read it as ``..``), ``../admin`` as ``..%2Fadmin`` (proxies that
    decode %2F resolve it) and ``..\\`` is a dot segment to IIS."""
    http = await sink(url=target.url + "/api/orders/{data.reference}/items")
    event = ORDER.model_copy(update={"data": {"reference": value}})
    with pytest.raises(PermanentError, match=r"^url: "):
        await http.write(event)
    await http.close()
    assert target.requests == []


@pytest.mark.parametrize(
    ("value", "segment"),
    [
        ("%2e%2e", "%252e%252e"),
        ("x?admin=1#top", "x%3Fadmin%3D1%23top"),
        ("SO 1/2", "SO%201%2F2"),
        ("a;b", "a%3Bb"),  # yarl re-normalised it to a;b, a path parameter to Tomcat
        ("..%3B", "..%253B"),
        ("...", "..."),
    ],
)
async def test_a_value_fills_exactly_one_path_segment_sent_as_encoded(
    target: Target, value: str, segment: str
) -> None:
    """The target receives the percent-encoding render_url built, byte for byte."""
    http = await sink(url=target.url + "/api/orders/{data.reference}/items?v=1")
    await http.write(ORDER.model_copy(update={"data": {"reference": value}}))
    await http.close()
    [request] = target.requests
    assert request["raw_path"] == f"/api/orders/{segment}/items?v=1"


async def test_a_cross_origin_redirect_is_not_followed_and_gets_no_credentials(
    target: Target, elsewhere: Target
) -> None:
    """aiohttp followed a 307 with the API key and custom headers to wherever it pointed."""
    target.answers.append((307, {"Location": elsewhere.url + "/collect"}, ""))
    http = await sink(
        url=target.url + "/shipments",
        auth={"kind": "api_key", "header": "X-API-Key", "key": "k-secret"},
        headers={"X-Tenant": "acme"},
    )
    with pytest.raises(PermanentError, match=r"HTTP 307 redirect to .* not followed") as caught:
        await http.write(ORDER)
    await http.close()
    assert caught.value.status == 307
    assert [r["headers"]["X-API-Key"] for r in target.requests] == ["k-secret"]
    assert elsewhere.requests == []


async def test_same_origin_redirects_are_not_followed_either_but_303_is_done(
    target: Target,
) -> None:
    target.answers.append((308, {"Location": target.url + "/v2/shipments"}, ""))
    target.answers.append((303, {"Location": target.url + "/shipments/1"}, ""))
    http = await sink(url=target.url + "/shipments")
    with pytest.raises(PermanentError, match="HTTP 308 redirect"):
        await http.write(ORDER)
    await http.write(ORDER)  # 303 See Other: carried out, the result is elsewhere
    await http.close()
    assert [r["path"] for r in target.requests] == ["/shipments", "/shipments"]


async def test_a_control_character_in_the_idempotency_key_parks_the_event_unsent(
    target: Target,
) -> None:
    """aiohttp refuses it with a ValueError, which was retried as an unknown failure."""
    http = await sink(url=target.url + "/shipments")
    with pytest.raises(PermanentError, match="Idempotency-Key: the value holds a control"):
        await http.write(ORDER.model_copy(update={"id": "evt-1\r\nX-Admin: 1"}))
    await http.close()
    assert target.requests == []


async def test_the_template_text_is_encoded_once_and_kept_as_written(target: Target) -> None:
    """A space or non-ASCII letter the operator wrote is encoded; their own escapes and ``;``
    are sent untouched."""
    http = await sink(url=target.url + "/api/bücher/a b;v=2/%7Eme/{data.reference}?q=x y")
    await http.write(ORDER.model_copy(update={"data": {"reference": "r"}}))
    await http.close()
    [request] = target.requests
    assert request["raw_path"] == "/api/b%C3%BCcher/a%20b;v=2/%7Eme/r?q=x%20y"


def test_placeholders_may_not_choose_the_host() -> None:
    with pytest.raises(ValueError, match="not the host"):
        HttpSinkSettings(url="https://{data.tenant}.example.com/api")
    with pytest.raises(ValueError, match="not an http"):
        HttpSinkSettings(url="{data.url}")


async def test_a_password_in_the_url_is_in_no_error_or_parked_reason(target: Target) -> None:
    """https://user:secret@host/... (and a token URL's ?password=) was copied into every error
    and parked reason."""
    userinfo = "shipper:s3cr3t-pw@"
    target.answers.append((400, {}, "bad reference"))
    http = await sink(url=target.url.replace("//", "//" + userinfo) + "/shipments")
    with pytest.raises(PermanentError) as parked:
        await http.write(ORDER)
    await http.close()
    assert "shipper:***@127.0.0.1" in str(parked.value)
    http = await sink(url=f"http://{userinfo}127.0.0.1:{free_port()}/nobody")
    with pytest.raises(TransientError) as retried:
        await http.write(ORDER)
    await http.close()
    http = await sink(
        url=target.url + "/shipments",
        auth={
            "kind": "oauth2",
            "token_url": f"http://127.0.0.1:{free_port()}/oauth/token?password=s3cr3t-pw",
            "client_id": "esb",
            "client_secret": "cs",
        },
    )
    with pytest.raises(TransientError) as token:
        await http.write(ORDER)
    await http.close()
    for error in (parked.value, retried.value, token.value):
        assert "s3cr3t-pw" not in str(error)
