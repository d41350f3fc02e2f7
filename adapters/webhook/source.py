"""Receive webhooks over HTTP (aiohttp) and publish each as an event, answering after the confirm.

Answers: 202 once the broker confirmed the event; 200 for an event id seen
before (not published again); 400 for a body or header that cannot become an
event (not JSON, not a valid CloudEvent, a type that is not topic words, beyond
the limits); 401 for a bad signature; 413 for a body over the limit; 503 with
Retry-After when the broker cannot confirm in time, so the sender retries.
CloudEvents' HTTP binding is accepted: structured mode
(``application/cloudevents+json``) always, binary mode (``ce-`` headers) only
without a signature, as no scheme signs those headers.

The event id is one the signature covers, so a replayed delivery is the same
event: see :meth:`WebhookSource.event_id`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar

from aiohttp import web

from adapters.edge import check_publishable
from adapters.webhook.settings import STANDARD_ID_HEADER, WebhookSourceSettings, is_event_type
from adapters.webhook.signatures import SCHEMES, body_id, signing_key
from esb import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_ATTRIBUTE_BYTES,
    SHORT_STRING_BYTES,
    STRUCTURED_CONTENT_TYPE,
    AdapterSettings,
    BrokerUnavailable,
    CloudEvent,
    ConfigError,
    Emitter,
    EnvelopeError,
    Source,
    UnroutableError,
    continue_trace,
    decode_binary,
    is_structured,
    loads_json,
    parse_structured,
)

log = logging.getLogger(__name__)

SEEN_IDS = 100_000
SEEN_SECONDS = 24 * 3600
RETRY_AFTER_SECONDS = "5"


class WebhookSource(Source[WebhookSourceSettings]):
    """An HTTP endpoint for one sender (a shop, a CRM, GitHub, a payment provider)."""

    settings_model: ClassVar[type[AdapterSettings]] = WebhookSourceSettings

    def __init__(self, settings: WebhookSourceSettings, emitter: Emitter) -> None:
        super().__init__(settings, emitter)
        #: What every consumer accepts; the emitter knows it when it publishes to a broker.
        self.bus_max_body_bytes: int = getattr(emitter, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        if settings.max_body_bytes > self.bus_max_body_bytes:
            raise ConfigError(
                f"http-webhook: max_body_bytes {settings.max_body_bytes} is more than consumers "
                f"accept (broker.max_body_bytes {self.bus_max_body_bytes}): lower it, or raise "
                "broker.max_body_bytes (ESB_BROKER__MAX_BODY_BYTES) for every esb process"
            )
        self._key = (
            signing_key(settings.signature, settings.secret.get_secret_value())
            if settings.signature != "none" and settings.secret is not None
            else None
        )
        self._seen: OrderedDict[str, float] = OrderedDict()
        #: Events being published now, by id: a concurrent copy waits for the first's outcome.
        self._in_flight: dict[str, asyncio.Event] = {}
        self.port: int | None = None
        self.listening = asyncio.Event()

    @property
    def ready(self) -> bool:
        """Ready once the HTTP endpoint listens: a sender told "ready" must not be refused."""
        return self.listening.is_set() and not self.stopping.is_set()

    async def run(self) -> None:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_post(self.settings.path, self.receive)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, self.settings.host, self.settings.port).start()
        self.port = runner.addresses[0][1]
        self.listening.set()
        log.info("webhooks on port %s at %s", self.port, self.settings.path)
        try:
            await self.stopping.wait()
        finally:
            await runner.cleanup()

    async def receive(self, request: web.Request) -> web.Response:
        """Answer one request, counted by the status answered."""
        response = await self._receive(request)
        self.count("request", str(response.status))
        return response

    async def _receive(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._too_large()
        if reason := self.verify(body, request.headers):
            self.refuse_input("bad_signature", reason)
            return web.json_response({"error": reason}, status=401)
        try:
            event = continue_trace(self.to_event(body, request.headers), request.headers)
            check_publishable(event, self.bus_max_body_bytes)
        except EnvelopeError as exc:
            if exc.code == "too_large":  # JSON re-encoded larger than it came (1e15, 1E2)
                return self._too_large()
            return self._refuse(exc.code, str(exc))
        except Exception as exc:  # hostile input must not become a 500: refuse it, keep the trace
            log.warning("cannot decode a webhook", exc_info=True)
            return self._refuse("undecodable", f"cannot decode: {type(exc).__name__}: {exc}")
        try:
            async with asyncio.timeout(self.settings.accept_timeout):
                published = await self._publish_once(event)
        except EnvelopeError as exc:
            return self._refuse(exc.code, str(exc))
        except (TimeoutError, BrokerUnavailable, UnroutableError) as exc:
            log.warning(
                "webhook not accepted, the sender will retry: %s",
                exc or "no confirm",
                extra={"message_id": event.id},
            )
            return web.json_response(
                {"error": "not accepted, retry later"},
                status=503,
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
        if not published:
            return web.json_response({"id": event.id, "status": "duplicate"}, status=200)
        return web.json_response({"id": event.id, "status": "accepted"}, status=202)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """Why the request is not authentic, or None; never raises on what a sender sent."""
        if self._key is None:
            return None
        check = SCHEMES[self.settings.signature]
        try:
            return check(self._key, body, headers, self.settings.tolerance_seconds)
        except Exception as exc:  # a header no check foresaw is unverified, not a server error
            log.warning("cannot verify a webhook signature", exc_info=True)
            return f"cannot verify the signature ({type(exc).__name__})"

    def to_event(self, body: bytes, headers: Mapping[str, str]) -> CloudEvent:
        """The event a request carries: a structured CloudEvent as is, a binary-mode one
        without a signature, or JSON data with the type and id the settings say."""
        content_type = headers.get("Content-Type")
        if is_structured(content_type):
            return parse_structured(body)
        ce_headers = {k.lower(): v for k, v in headers.items() if k.lower().startswith("ce-")}
        if "ce-id" in ce_headers:
            if self.settings.signature != "none":
                raise EnvelopeError(
                    "ce-id",
                    f"ce- headers are not covered by the {self.settings.signature} signature; "
                    f"send the event as {STRUCTURED_CONTENT_TYPE}",
                    "unsigned_attributes",
                )
            return decode_binary(
                body,
                message_id=None,
                type=None,
                content_type=content_type,
                correlation_id=None,
                headers=ce_headers,
            )
        data = loads_json(body, "body")
        event_type = self.event_type(headers, data)
        attributes: dict[str, Any] = {"id": self.event_id(body, headers, data, event_type)}
        if (
            self.settings.signature in ("github", "shopify", "stripe")
            and self.settings.id_header is not None
            and (delivery := headers.get(self.settings.id_header))
        ):
            attributes["extensions"] = {
                "deliveryid": _text(self.settings.id_header, delivery, MAX_ATTRIBUTE_BYTES)
            }
        return CloudEvent.new(event_type, self.settings.event_source, data, **attributes)

    def event_id(self, body: bytes, headers: Mapping[str, str], data: Any, event_type: str) -> str:
        """An id the signature covers, so a replay is the same event and is accepted once.

        standard signs ``webhook-id``; Stripe's body carries the event's ``id``;
        GitHub and Shopify sign the body only, so their delivery-id header could
        be anything and the id is a keyed hash of the event type and the body
        instead: Shopify sends orders/create, orders/paid and orders/updated
        with identical bodies, and each is an event of its own. Without a
        signature nothing is authentic: the ``id_header`` value, else a new UUID.
        """
        scheme = self.settings.signature
        if scheme == "standard":
            return _text(STANDARD_ID_HEADER, headers[STANDARD_ID_HEADER], SHORT_STRING_BYTES)
        if scheme == "stripe" and isinstance(data, dict) and isinstance(data.get("id"), str):
            return str(data["id"])
        if self._key is not None:
            return body_id(self._key, event_type.encode() + b"\0" + body)
        if self.settings.id_header and (delivery := headers.get(self.settings.id_header)):
            return _text(self.settings.id_header, delivery, SHORT_STRING_BYTES)
        return str(uuid.uuid4())

    def event_type(self, headers: Mapping[str, str], data: Any) -> str:
        """The configured type, or the prefixed header or body value, if it is topic words."""
        if (header := self.settings.event_type_header) is not None:
            value = headers.get(header)
            if not value:
                raise EnvelopeError(header, "header missing", "missing_attribute")
            where = header
            value = value.replace("/", ".")
        elif (field := self.settings.event_type_field) is not None:
            value = data.get(field) if isinstance(data, dict) else None
            if not isinstance(value, str) or not value:
                raise EnvelopeError(f"body.{field}", "missing or not a string", "missing_attribute")
            where = f"body.{field}"
        else:
            return self.settings.event_type
        event_type = self.settings.type_prefix + value
        if not is_event_type(event_type):
            raise EnvelopeError(
                where,
                f"the event type must be dot-separated words of letters, digits, _ and - "
                f"within {SHORT_STRING_BYTES} bytes",
                "invalid_type",
            )
        return event_type

    async def _publish_once(self, event: CloudEvent) -> bool:
        """Publish ``event`` unless it was published before; False for a duplicate.

        Copies of an event in flight wait for the first one: once it is
        confirmed they are duplicates; if it failed, one of them publishes.
        """
        while (pending := self._in_flight.get(event.id)) is not None:
            await pending.wait()
        if self._was_seen(event.id):
            return False
        done = self._in_flight[event.id] = asyncio.Event()
        try:
            await self.emit(event)
            self._remember(event.id)
        finally:
            del self._in_flight[event.id]
            done.set()
        return True

    def _refuse(self, code: str, reason: str) -> web.Response:
        self.refuse_input(code, reason)
        return web.json_response({"error": reason}, status=400)

    def _too_large(self) -> web.Response:
        limit = min(self.settings.max_body_bytes, self.bus_max_body_bytes)
        self.refuse_input("too_large", f"a webhook body over {limit} bytes")
        return web.json_response({"error": f"body over {limit} bytes"}, status=413)

    def _was_seen(self, event_id: str) -> bool:
        seen_at = self._seen.get(event_id)
        return seen_at is not None and time.monotonic() - seen_at < SEEN_SECONDS

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = time.monotonic()
        self._seen.move_to_end(event_id)
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)


def _text(header: str, value: str, limit: int) -> str:
    """A header value fit for an event attribute: UTF-8 text within ``limit`` bytes."""
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise EnvelopeError(header, "not UTF-8 text", "invalid_encoding") from None
    if size > limit or not value.isprintable():
        raise EnvelopeError(
            header, f"must be printable text within {limit} bytes", "invalid_attribute"
        )
    return value
