"""Generated headers and bodies against the signature checks and the decoding of a request.

Unit tests (no server, no broker): whatever a sender puts in a header or a
body, a check answers None or a reason and decoding answers an event or an
EnvelopeError, so the endpoint answers 401 or 400 and never 500.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from adapters.edge import check_publishable
from adapters.webhook import WebhookSource
from adapters.webhook.settings import WebhookSourceSettings
from adapters.webhook.signatures import SCHEMES, signing_key
from esb import EnvelopeError
from esb.testing import MemoryBus

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
SIGNATURE_HEADERS = [
    "X-Hub-Signature-256",
    "X-Shopify-Hmac-Sha256",
    "Stripe-Signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
]
OTHER_HEADERS = ["Content-Type", "X-Topic", "X-Delivery", "ce-id", "ce-type", "ce-source"]

#: What aiohttp hands over: any bytes decoded as UTF-8 with surrogateescape, or any text.
header_value = st.one_of(
    st.text(),
    st.binary(max_size=64).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    st.sampled_from(["sha256=", "v1,", "t=1,v1=", "1700000000", "9" * 5000, "application/json"]),
    st.builds(lambda t, s: f"t={t},v1={s}", st.integers(-(10**30), 10**30), st.text()),
    st.builds(lambda s: f"v1,{s} v1,", st.text()),
)
headers = st.dictionaries(
    st.sampled_from(SIGNATURE_HEADERS + OTHER_HEADERS), header_value, max_size=8
).map(CIMultiDict)
bodies = st.one_of(
    st.binary(max_size=256),
    st.sampled_from([b"{}", b"[]", b'{"type": "a.b", "id": "x"}', b"[" * 80 + b"]" * 80]),
    st.builds(
        lambda event_id, event_type, data: json.dumps(
            {
                "specversion": "1.0",
                "id": event_id,
                "type": event_type,
                "source": "urn:x",
                "data": data,
            }
        ).encode(),
        st.text(min_size=1) | st.just("i" * 300),
        st.text(min_size=1) | st.just("a.b"),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        ),
    ),
)


@settings(max_examples=500)
@given(scheme=st.sampled_from(sorted(SCHEMES)), body=bodies, request_headers=headers)
def test_a_signature_check_answers_a_reason_and_never_raises(
    scheme: str, body: bytes, request_headers: CIMultiDict[str]
) -> None:
    reason = SCHEMES[scheme](signing_key(scheme, SECRET), body, request_headers, 300)
    assert reason is None or (isinstance(reason, str) and reason)


CONFIGURATIONS: list[dict[str, Any]] = [
    {},
    {"id_header": "X-Delivery", "event_type_header": "X-Topic", "type_prefix": "shop."},
    {"signature": "github", "secret": SECRET, "id_header": "X-Delivery"},
    {"signature": "stripe", "secret": SECRET, "event_type_field": "type"},
    {"signature": "standard", "secret": SECRET, "event_type_header": "X-Topic"},
]


@settings(max_examples=500)
@given(
    configuration=st.sampled_from(CONFIGURATIONS),
    body=bodies,
    request_headers=headers.map(lambda h: {**h, "webhook-id": h.get("webhook-id") or "msg_1"}),
)
def test_decoding_a_request_gives_an_event_or_an_envelope_error(
    configuration: dict[str, Any], body: bytes, request_headers: dict[str, str]
) -> None:
    """Signature checked or not, a request becomes an event that can travel, or a reason."""
    source = WebhookSource(WebhookSourceSettings(**configuration), MemoryBus())
    reason = source.verify(body, CIMultiDict(request_headers))
    assert reason is None or reason
    with contextlib.suppress(EnvelopeError):
        check_publishable(source.to_event(body, CIMultiDict(request_headers)))
