"""The marketing tool's contact API, with the quota a partner API enforces.

PUT /v1/contacts/{email} with ``{"lifecycle_stage": ...}`` sets a contact's
stage; it wants an API key, refuses an unknown stage or a malformed address
with 422, and answers 429 with Retry-After when a client goes over its quota
(every ``quota_every``-th request here, so the demo shows the sink waiting).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

STAGES = ("subscriber", "lead", "customer")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class MarketingApi:
    """Contacts by e-mail address, each with its lifecycle stage."""

    def __init__(self, api_key: str, quota_every: int = 0) -> None:
        self.api_key = api_key
        self.quota_every = quota_every
        self.contacts: dict[str, str] = {}
        self.answers: Counter[int] = Counter()
        self._requests = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_put("/v1/contacts/{email}", self.put_contact)
        return app

    def _answer(self, status: int, body: dict[str, Any], **headers: str) -> web.Response:
        self.answers[status] += 1
        return web.json_response(
            body, status=status, headers=headers, dumps=lambda v: orjson.dumps(v).decode()
        )

    async def put_contact(self, request: web.Request) -> web.Response:
        if request.headers.get("X-API-Key") != self.api_key:
            return self._answer(401, {"error": "missing or wrong X-API-Key"})
        self._requests += 1
        if self.quota_every and self._requests % self.quota_every == 0:
            return self._answer(429, {"error": "quota exceeded"}, **{"Retry-After": "1"})
        email = request.match_info["email"]
        if not EMAIL.match(email):
            return self._answer(422, {"error": f"{email!r} is not an e-mail address"})
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return self._answer(400, {"error": f"invalid JSON: {exc}"})
        stage = body.get("lifecycle_stage") if isinstance(body, dict) else None
        if stage not in STAGES:
            return self._answer(422, {"error": f"lifecycle_stage must be one of {STAGES}"})
        created = email not in self.contacts
        self.contacts[email] = stage
        return self._answer(201 if created else 200, {"email": email, "lifecycle_stage": stage})
