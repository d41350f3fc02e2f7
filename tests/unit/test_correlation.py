"""Business correlation: a source takes ``correlationid`` from a data field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esb.adapter import Source
from esb.correlation import DataField
from esb.envelope import CloudEvent
from esb.errors import ConfigError
from esb.settings import AdapterSettings, load_settings
from esb.testing import MemoryBus

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


class Orders(Source[AdapterSettings]):
    settings_model = AdapterSettings

    async def run(self) -> None:
        """Emits what the test hands to ``emit``."""


def order(data: Any, **attributes: Any) -> CloudEvent:
    return CloudEvent.new("shop.order.paid", "urn:shop", data, **attributes)


async def test_every_event_of_one_order_shares_its_number_across_sources() -> None:
    bus = MemoryBus()
    bus.bind("all", "#")
    shop, erp = Orders(AdapterSettings(), bus), Orders(AdapterSettings(), bus)
    shop.correlate_by = DataField("order_id")
    erp.correlate_by = DataField("order.number")
    await shop.emit(order({"order_id": "SO-221"}, correlationid="webhook-delivery-1"))
    await shop.emit(order({"order_id": "SO-221", "status": "paid"}))
    await erp.emit(order({"order": {"number": "SO-221"}}))
    await erp.emit(order({"order": {"number": 221}}))
    assert [e.correlationid for e in bus.published] == ["SO-221", "SO-221", "SO-221", "221"]


@pytest.mark.parametrize(
    "data",
    [
        None,
        "text",
        [1],
        {},
        {"order_id": None},
        {"order_id": ""},
        {"order_id": 2.5},
        {"order_id": True},
        {"order_id": {"n": 1}},
        {"order_id": "x" * 300},
    ],
)
async def test_an_event_without_a_usable_key_keeps_its_own_and_is_counted(data: Any) -> None:
    bus = MemoryBus()
    bus.bind("all", "#")
    shop = Orders(AdapterSettings(), bus)
    shop.correlate_by = DataField("order_id")
    await shop.emit(order(data, correlationid="webhook-delivery-1"))
    assert [e.correlationid for e in bus.published] == ["webhook-delivery-1"]
    assert shop.counted == {("correlate", "missing"): 1}


@given(json_values)
def test_any_data_gives_a_short_text_key_or_none(data: Any) -> None:
    event = order({"order_id": data})
    correlated = DataField("order_id").correlate(event)
    if correlated is None:
        return
    assert correlated.correlationid is not None
    assert 0 < len(correlated.correlationid.encode("utf-8", "surrogatepass")) <= 255
    assert correlated.data == event.data
    assert correlated.id == event.id


@pytest.mark.parametrize("path", ["", "order id", ".order", "order.", "a..b", "data[0]", "é"])
def test_a_wrong_field_path_is_a_settings_error_naming_it(path: str) -> None:
    with pytest.raises(ConfigError, match=r"source\.correlation_field"):
        load_settings(source={"correlation_field": path})
