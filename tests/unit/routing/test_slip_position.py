"""The route and step a journal record takes from a message's slip, whatever the slip holds."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from esb.journal import HopRecord
from esb.slip import HEADER, Slip, slip_position

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=10,
)
slips = st.fixed_dictionaries(
    {},
    optional={
        "route": json_values | st.text(min_size=250, max_size=300),
        "position": json_values,
        "version": json_values,
    },
).map(lambda doc: orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS))


def test_a_genuine_slip_gives_its_route_and_step() -> None:
    assert slip_position({HEADER: Slip("paid-orders", "v1", 3).encode()}) == ("paid-orders", 3)
    assert slip_position({}) == (None, None)
    assert slip_position(None) == (None, None)


@given(st.one_of(slips, st.binary(max_size=50), json_values))
def test_anything_in_the_header_gives_what_a_record_can_hold(raw: Any) -> None:
    route, step = slip_position({HEADER: raw})
    record = {"event": "e", "outcome": "applied", "service": "s", "role": "r", "at": 0.0}
    HopRecord.model_validate({**record, "route": route, "step": step})  # never refused
