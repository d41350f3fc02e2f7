"""Receive webhooks over HTTP (aiohttp) and publish each as an event, answering after the confirm.

Answers: 202 once the broker confirmed the event; 200 for a delivery id seen
before (not published again); 400 for a body that is not JSON or not a valid
CloudEvent; 401 for a bad signature; 413 for a body over the limit; 503 with
Retry-After when the broker cannot confirm in time, so the sender retries.
CloudEvents' HTTP binding is accepted as is: binary mode (``ce-`` headers) and
structured mode (``application/cloudevents+json``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import ClassVar

from aiohttp import web

from adapters.webhook.settings import WebhookSourceSettings
from adapters.webhook.signatures import SCHEMES
from esb import (
    AdapterSettings,
    BrokerUnavailable,
    CloudEvent,
    Emitter,
    EnvelopeError,
    Source,
    UnroutableError,
)
from esb.amqp_binding import STRUCTURED_CONTENT_TYPE, decode
from esb.envelope import loads_json, parse_structured

log = logging.getLogger(__name__)

SEEN_IDS = 100_000
SEEN_SECONDS = 24 * 3600
RETRY_AFTER_SECONDS = "5"


class WebhookSource(Source[WebhookSourceSettings]):
    """An HTTP endpoint for one sender (a shop, a CRM, GitHub, a payment provider)."""

    settings_model: ClassVar[type[AdapterSettings]] = WebhookSourceSettings

    def __init__(self, settings: WebhookSourceSettings, emitter: Emitter) -> None:
        super().__init__(settings, emitter)
        self._seen: OrderedDict[str, float] = OrderedDict()
        self.port: int | None = None
        self.listening = asyncio.Event()

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
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            limit = self.settings.max_body_bytes
            self.refuse_input("too_large", f"a webhook body over {limit} bytes")
            return web.json_response({"error": f"body over {limit} bytes"}, status=413)
        if self.settings.signature != "none" and self.settings.secret is not None:
            check = SCHEMES[self.settings.signature]
            reason = check(
                self.settings.secret.get_secret_value(),
                body,
                request.headers,
                self.settings.tolerance_seconds,
            )
            if reason is not None:
                self.refuse_input("bad_signature", reason)
                return web.json_response({"error": reason}, status=401)
        try:
            event = self.to_event(body, request.headers)
        except EnvelopeError as exc:
            self.refuse_input(exc.code, str(exc))
            return web.json_response({"error": str(exc)}, status=400)
        if self._was_seen(event.id):
            return web.json_response({"id": event.id, "status": "duplicate"}, status=200)
        try:
            await asyncio.wait_for(self.emit(event), timeout=self.settings.accept_timeout)
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
        self._remember(event.id)
        return web.json_response({"id": event.id, "status": "accepted"}, status=202)

    def to_event(self, body: bytes, headers: Mapping[str, str]) -> CloudEvent:
        """The event a request carries: a CloudEvent as is, or plain JSON mapped by settings."""
        content_type = headers.get("Content-Type")
        if content_type is not None and content_type.startswith(STRUCTURED_CONTENT_TYPE):
            return parse_structured(body)
        ce_headers = {k.lower(): v for k, v in headers.items() if k.lower().startswith("ce-")}
        if "ce-id" in ce_headers:
            return decode(
                body,
                message_id=None,
                type=None,
                content_type=content_type,
                correlation_id=None,
                headers=ce_headers,
            )
        data = loads_json(body, "body")
        event_type = self.settings.event_type
        if self.settings.event_type_header is not None:
            value = headers.get(self.settings.event_type_header)
            if not value:
                raise EnvelopeError(self.settings.event_type_header, "header missing")
            event_type = self.settings.type_prefix + value.replace("/", ".")
        delivery = headers.get(self.settings.id_header) if self.settings.id_header else None
        return CloudEvent.new(
            event_type, self.settings.event_source, data, id=delivery or str(uuid.uuid4())
        )

    def _was_seen(self, event_id: str) -> bool:
        seen_at = self._seen.get(event_id)
        return seen_at is not None and time.monotonic() - seen_at < SEEN_SECONDS

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = time.monotonic()
        self._seen.move_to_end(event_id)
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
