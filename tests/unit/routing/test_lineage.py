"""Derived ids: the same as before the hand-made uuid5, so redeliveries across an upgrade
still de-duplicate."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from esb import CloudEvent
from esb.routing.lineage import NAMESPACE, derive, derived_id


@given(st.text())
def test_a_derived_id_is_the_uuid5_of_its_name(name: str) -> None:
    assert derived_id(name) == str(uuid.uuid5(NAMESPACE, name))


def test_an_event_derives_the_same_id_as_esb_always_did() -> None:
    event = CloudEvent(id="order-1", source="shop", type="shop.order.paid", data={"a": 1})
    derived = derive(event, "route orders", event.data)
    assert derived.id == "82c49758-87db-5d39-bb43-9e4852a86fd8"  # uuid5 of "order-1/route orders"
    assert derived.causationid == "order-1"
    assert derived.correlationid == "order-1"
