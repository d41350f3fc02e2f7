"""The header nesting guard: pamqp's recursive, copying table decoder never sees deep tables."""

from __future__ import annotations

import sys
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import decode, encode

from esb.amqp_guard import REFUSED, nesting
from esb.amqp_tables import install_table_codecs
from esb.limits import MAX_HEADER_NESTING
from tests.support.hostile_cases import field_values


def depth(value: Any) -> int:
    """Nesting as the guard counts it: a table or array is one level more than its contents."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def deep_table(levels: int) -> bytes:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # pamqp encodes recursively too
    try:
        table: dict[str, Any] = {}
        for _ in range(levels - 1):
            table = {"a": table}
        return encode.field_table(table)
    finally:
        sys.setrecursionlimit(limit)


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=8), field_values, max_size=5))
def test_the_scan_measures_what_pamqp_encodes(table: dict[str, Any]) -> None:
    assert nesting(encode.field_table(table)) == depth(table) or (
        not table and nesting(b"\0\0\0\0") == 1
    )


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_the_scan_never_fails_on_arbitrary_bytes(data: bytes) -> None:
    found = nesting(data)
    assert found is None or found >= 1


def test_a_table_nested_18000_deep_decodes_at_once_as_a_refusal_marker() -> None:
    """Unguarded, pamqp took 1.6 s and 2 GB for this 126 KiB header, or raised RecursionError."""
    data = deep_table(18_000)
    install_table_codecs()
    started = time.perf_counter()
    consumed, value = decode.by_type(data, "table")
    assert time.perf_counter() - started < 0.1
    assert consumed == len(data)
    assert value == {REFUSED: f"header tables nested deeper than {MAX_HEADER_NESTING} levels"}


def test_tables_within_the_limit_decode_as_before() -> None:
    install_table_codecs()
    table = {"x-death": [{"count": 2, "routing-keys": ["q"]}], "ce-id": "1"}
    data = encode.field_table(table)
    assert decode.by_type(data, "table") == (len(data), table)
    at_limit = deep_table(MAX_HEADER_NESTING)
    assert REFUSED not in decode.by_type(at_limit, "table")[1]
    assert REFUSED in decode.by_type(deep_table(MAX_HEADER_NESTING + 1), "table")[1]
