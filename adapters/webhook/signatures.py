"""Webhook signature schemes: HMAC-SHA256 over the raw body, compared in constant time.

Each check returns None when the request is authentic, else the reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping


def _hmac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def github(secret: str, body: bytes, headers: Mapping[str, str], tolerance: int) -> str | None:
    given = headers.get("X-Hub-Signature-256", "")
    expected = "sha256=" + _hmac(secret.encode(), body).hex()
    if not given:
        return "missing X-Hub-Signature-256"
    return None if hmac.compare_digest(given, expected) else "X-Hub-Signature-256 does not match"


def shopify(secret: str, body: bytes, headers: Mapping[str, str], tolerance: int) -> str | None:
    given = headers.get("X-Shopify-Hmac-Sha256", "")
    expected = base64.b64encode(_hmac(secret.encode(), body)).decode()
    if not given:
        return "missing X-Shopify-Hmac-Sha256"
    return None if hmac.compare_digest(given, expected) else "X-Shopify-Hmac-Sha256 does not match"


def _fresh(timestamp: str, tolerance: int) -> str | None:
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        return f"timestamp {timestamp!r} is not a number"
    return None if age <= tolerance else f"timestamp is {age:.0f} s away (tolerance {tolerance} s)"


def stripe(secret: str, body: bytes, headers: Mapping[str, str], tolerance: int) -> str | None:
    parts = [p.split("=", 1) for p in headers.get("Stripe-Signature", "").split(",") if "=" in p]
    timestamp = next((v for k, v in parts if k == "t"), None)
    signatures = [v for k, v in parts if k == "v1"]
    if timestamp is None or not signatures:
        return "missing or malformed Stripe-Signature"
    if reason := _fresh(timestamp, tolerance):
        return reason
    expected = _hmac(secret.encode(), timestamp.encode() + b"." + body).hex()
    if any(hmac.compare_digest(s, expected) for s in signatures):
        return None
    return "Stripe-Signature does not match"


def standard(secret: str, body: bytes, headers: Mapping[str, str], tolerance: int) -> str | None:
    webhook_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    given = headers.get("webhook-signature", "")
    if not webhook_id or not timestamp or not given:
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    if reason := _fresh(timestamp, tolerance):
        return reason
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"))
    except ValueError:
        return "the configured secret is not base64"
    payload = f"{webhook_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(_hmac(key, payload)).decode()
    offered = [s.split(",", 1)[1] for s in given.split() if s.startswith("v1,")]
    if any(hmac.compare_digest(s, expected) for s in offered):
        return None
    return "webhook-signature does not match"


SCHEMES = {"github": github, "shopify": shopify, "stripe": stripe, "standard": standard}
