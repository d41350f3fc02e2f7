"""Webhook signature schemes: HMAC-SHA256 over the raw body, compared in constant time.

Each check returns None when the request is authentic, else the reason. Header
values are whatever an attacker sent (aiohttp hands undecodable bytes over as
surrogate escapes), so every check answers with a reason and never raises.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping

Check = Callable[[bytes, bytes, Mapping[str, str], int], str | None]

#: A Unix time in seconds, as senders write it: ASCII digits only, no sign, no spaces.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

#: What the derived event id is an HMAC of, besides the body: never the signature itself, so
#: an event id on the bus is no valid signature for its body.
_ID_DOMAIN = b"esb.webhook.event-id\x00"


def _hmac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def _matches(given: str, expected: str) -> bool:
    """Constant-time comparison of a header value with the expected ASCII signature.

    ``hmac.compare_digest`` raises TypeError on non-ASCII text: such a value is
    simply not the signature.
    """
    return given.isascii() and hmac.compare_digest(given, expected)


def _raw(value: str) -> bytes:
    """A header value as the bytes the sender sent (aiohttp decodes them with surrogateescape)."""
    return value.encode("utf-8", "surrogateescape")


def signing_key(scheme: str, secret: str) -> bytes:
    """The HMAC key of ``scheme``: the secret's bytes, or for ``standard`` its base64 payload."""
    if scheme == "standard":
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    return secret.encode()


def body_id(key: bytes, body: bytes) -> str:
    """An event id bound to ``body`` (the event type, NUL, the signed body): a replay of the
    body under the same type has it too, whatever the other headers.

    Keyed, so nobody without the secret can predict the id of a future event
    (and pre-empt it in a sink's de-duplication store).
    """
    return hmac.new(key, _ID_DOMAIN + body, hashlib.sha256).hexdigest()


def github(key: bytes, body: bytes, headers: Mapping[str, str], tolerance: int) -> str | None:
    given = headers.get("X-Hub-Signature-256", "")
    if not given:
        return "missing X-Hub-Signature-256"
    expected = "sha256=" + _hmac(key, body).hex()
    return None if _matches(given, expected) else "X-Hub-Signature-256 does not match"


def shopify(key: bytes, body: bytes, headers: Mapping[str, str], tolerance: int) -> str | None:
    given = headers.get("X-Shopify-Hmac-Sha256", "")
    if not given:
        return "missing X-Shopify-Hmac-Sha256"
    expected = base64.b64encode(_hmac(key, body)).decode()
    return None if _matches(given, expected) else "X-Shopify-Hmac-Sha256 does not match"


def _fresh(timestamp: str, tolerance: int) -> str | None:
    if not _TIMESTAMP.fullmatch(timestamp):
        return "the signed timestamp is not a Unix time in seconds"
    age = abs(time.time() - int(timestamp))
    return None if age <= tolerance else f"timestamp is {age:.0f} s away (tolerance {tolerance} s)"


def stripe(key: bytes, body: bytes, headers: Mapping[str, str], tolerance: int) -> str | None:
    parts = [p.split("=", 1) for p in headers.get("Stripe-Signature", "").split(",") if "=" in p]
    timestamp = next((v for k, v in parts if k == "t"), None)
    signatures = [v for k, v in parts if k == "v1"]
    if timestamp is None or not signatures:
        return "missing or malformed Stripe-Signature"
    if reason := _fresh(timestamp, tolerance):
        return reason
    expected = _hmac(key, timestamp.encode() + b"." + body).hex()
    if any(_matches(s, expected) for s in signatures):
        return None
    return "Stripe-Signature does not match"


def standard(key: bytes, body: bytes, headers: Mapping[str, str], tolerance: int) -> str | None:
    webhook_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    given = headers.get("webhook-signature", "")
    if not webhook_id or not timestamp or not given:
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    if reason := _fresh(timestamp, tolerance):
        return reason
    payload = _raw(webhook_id) + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(_hmac(key, payload)).decode()
    offered = [s.split(",", 1)[1] for s in given.split() if s.startswith("v1,")]
    if any(_matches(s, expected) for s in offered):
        return None
    return "webhook-signature does not match"


SCHEMES: dict[str, Check] = {
    "github": github,
    "shopify": shopify,
    "stripe": stripe,
    "standard": standard,
}
