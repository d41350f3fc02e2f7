"""Send events to a REST API (aiohttp), classifying its answers into retry or park.

What comes from the event cannot steer the request: a value fills exactly
one path segment (percent-encoded with nothing left safe, sent as built, and
never holding a ``.`` or ``..`` between ``/``, ``\\`` or ``;``, which clients,
servers and proxies resolve), never the scheme or host, and
header values built from the event may not hold control characters. Redirects
are not followed, so credentials and custom headers only ever go to the
origin the ``url`` setting names: a 3xx other than 303 is parked with its
``Location`` for the operator to fix the URL.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import aiohttp
from aiolimiter import AsyncLimiter
from yarl import URL

from adapters.http.auth import Credentials, retry_after_seconds
from adapters.http.settings import URL_ATTRIBUTES, HttpSinkSettings
from esb import (
    AdapterSettings,
    CloudEvent,
    EventRef,
    PermanentError,
    Sink,
    Template,
    TransientError,
    http_error,
    redact_url,
    trace_headers,
)

_MAX_ERROR_BODY = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: What separates path parts for some server or proxy: Tomcat and Jetty read ``..;`` as ``..``,
#: IIS and some proxies take ``\`` for ``/``, and proxies that decode ``%2F`` split on it.
_PART_SEPARATORS = re.compile(r"[/\\;]")
#: Characters the template's own text may hold unencoded: RFC 3986 reserved, ``%`` and ``~``.
_TEMPLATE_SAFE = "!#$%&'()*+,/:;=?@[]~"
#: 303 See Other answers a request that was carried out: the result is elsewhere.
_DONE_ELSEWHERE = 303


def url_template(url: str) -> Template:
    """The ``url`` setting compiled, its own text percent-encoded once (placeholders are plain
    ASCII names, which encoding leaves as they are)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    rest = quote(url[len(origin) :], safe=_TEMPLATE_SAFE + "{}")
    return Template.compile(
        str(URL(origin)) + rest, "url", attributes=URL_ATTRIBUTES, whole_roots=True
    )


def _segment(ref: EventRef, text: str) -> str:
    """A value as one path segment: quoted with nothing safe; refused with a dot part."""
    if any(part in (".", "..") for part in _PART_SEPARATORS.split(text)):
        raise PermanentError(
            f"url: {{{ref}}} holds a . or .. part, which would move the path: {text[:200]!r}"
        )
    return quote(text, safe="")


def render_url(template: Template, event: CloudEvent) -> str:
    """The URL for ``event``: every value URL-quoted, so it fills exactly one path segment.

    A value is quoted with nothing safe, so ``/``, ``?``, ``#`` and ``%`` in it
    cannot start a segment, a query or a fragment. A value that holds a ``.``
    or ``..`` part between ``/``, ``\\`` or ``;`` is refused: some server or
    proxy on the way decodes or splits it into a dot segment, which moves the
    path. The result is already encoded: send it with ``URL(url)``,
    as re-normalising it would decode ``%3B`` back to ``;``.
    """
    url = template.render(event, _segment)
    path = urlsplit(url).path
    if any(segment in (".", "..") for segment in path.split("/")):
        raise PermanentError(f"url: a value makes a . or .. segment in the path {path[:200]!r}")
    return url


def check_header(name: str, value: str) -> str:
    """``value`` if it can be a header value; a CR, LF or NUL from an event is permanent."""
    if _CONTROL.search(value):
        raise PermanentError(f"header {name}: the value holds a control character (CR, LF, NUL)")
    return value


class HttpSink(Sink[HttpSinkSettings]):
    """One target API: bounded concurrency, an optional rate limit, auth, idempotency keys.

    2xx is success; 5xx, 408 and 429 (with Retry-After) are retried; other 4xx
    are parked with the target's answer; timeouts and refused connections are
    retried. The runtime's idempotency store keeps a redelivery from being sent
    twice; the Idempotency-Key header lets the target de-duplicate too.
    """

    settings_model: ClassVar[type[AdapterSettings]] = HttpSinkSettings

    def __init__(self, settings: HttpSinkSettings) -> None:
        super().__init__(settings)
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._limiter = AsyncLimiter(settings.rate_limit, 1) if settings.rate_limit else None
        self._url = url_template(settings.url)
        self.credentials = Credentials(settings.auth)

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def write(self, event: CloudEvent) -> None:
        if self._session is None:
            raise RuntimeError("HttpSink.open() has not been called")
        url = render_url(self._url, event)
        async with self._slots:
            if self._limiter is not None:
                await self._limiter.acquire()
            await self._send(self._session, url, event, refresh_token=False)

    async def _send(
        self, session: aiohttp.ClientSession, url: str, event: CloudEvent, *, refresh_token: bool
    ) -> None:
        headers = {**self.settings.headers, **trace_headers(event)}
        if self.settings.idempotency_header:
            name = self.settings.idempotency_header
            headers[name] = check_header(name, event.id)
        headers.update(await self.credentials.headers(session, refresh=refresh_token))
        kwargs: dict[str, Any] = {"headers": headers}
        if self.settings.body == "data":
            kwargs["json"] = event.data
        elif self.settings.body == "event":
            kwargs["data"] = event.to_structured()
            headers["Content-Type"] = "application/cloudevents+json"
        where = f"{self.settings.method} {redact_url(url.split('?', 1)[0])}"
        try:
            async with session.request(
                self.settings.method, URL(url, encoded=True), allow_redirects=False, **kwargs
            ) as response:
                self.count("response", f"{min(max(response.status // 100, 1), 5)}xx")
                if response.status < 300 or response.status == _DONE_ELSEWHERE:
                    return
                if response.status < 400:
                    location = response.headers.get("Location", "")[:_MAX_ERROR_BODY]
                    raise PermanentError(
                        f"{where}: HTTP {response.status} redirect to {location!r} not followed "
                        "(credentials go only where url says): set url to the new location",
                        status=response.status,
                    )
                if response.status == 401 and self.credentials.refreshable and not refresh_token:
                    await self._send(session, url, event, refresh_token=True)
                    return
                text = (await response.text())[:_MAX_ERROR_BODY]
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                raise http_error(response.status, f"{where}: {text}", retry_after)
        except TimeoutError:
            self.count("response", "timeout")
            raise TransientError(f"{where}: no answer within {self.settings.timeout} s") from None
        except aiohttp.ClientConnectionError as exc:
            self.count("response", "error")
            raise TransientError(f"{where}: {exc}") from None
