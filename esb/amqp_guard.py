"""A nesting guard on the AMQP client's header decoding.

pamqp decodes header tables recursively and copies the rest of the frame at
every level. A table nested 18,000 levels deep fits a 128 KiB frame; decoding
it costs seconds and gigabytes, or raises RecursionError in the connection's
reader and takes the whole connection down at every redelivery, before esb
sees the message at all. Every table esb's own decoder (:mod:`esb.amqp_tables`)
leaves to pamqp comes here first: a linear scan (no recursion, no copies)
measures the nesting, and a header table nested deeper than
:data:`esb.limits.MAX_HEADER_NESTING` is decoded as a single marker header,
which consumers refuse as ``headers_too_large`` like any other oversized header.
"""

from __future__ import annotations

import struct
from typing import Any

from pamqp import decode

from esb.limits import MAX_HEADER_NESTING

#: The header a refused table is decoded as; its value says why.
REFUSED = "x-esb-headers-refused"

_LENGTH = struct.Struct(">I")
#: Bytes after the type tag of each fixed-size field type (pamqp's TABLE_MAPPING).
_FIXED = {
    ord("t"): 1,
    ord("b"): 1,
    ord("B"): 1,
    ord("s"): 2,
    ord("u"): 2,
    ord("I"): 4,
    ord("i"): 4,
    ord("l"): 8,
    ord("L"): 8,
    ord("f"): 4,
    ord("d"): 8,
    ord("D"): 5,
    ord("T"): 8,
    ord("V"): 0,
    0: 0,
}
_SIZED = {ord("S"), ord("x")}
_TABLE, _ARRAY = ord("F"), ord("A")


def nesting(data: bytes, limit: int = MAX_HEADER_NESTING) -> int | None:
    """How deep the field table at the start of ``data`` nests (a flat table is 1), counted
    up to ``limit + 1``; None when the bytes are not a well-formed table."""
    try:
        (length,) = _LENGTH.unpack_from(data, 0)
        position = 4
        open_ends: list[tuple[int, bool]] = [(4 + length, True)]
        deepest = 1
        while open_ends:
            end, is_table = open_ends[-1]
            if position >= end:
                if position > end:
                    return None
                open_ends.pop()
                continue
            if is_table:
                position += 1 + data[position]
            tag = data[position]
            position += 1
            if tag in _FIXED:
                position += _FIXED[tag]
            elif tag in _SIZED:
                position += 4 + _LENGTH.unpack_from(data, position)[0]
            elif tag in (_TABLE, _ARRAY):
                (size,) = _LENGTH.unpack_from(data, position)
                position += 4
                open_ends.append((position + size, tag == _TABLE))
                deepest = max(deepest, len(open_ends))
                if deepest > limit:
                    return deepest
            else:
                return None
        return deepest if position <= len(data) else None
    except (IndexError, struct.error):
        return None


def guarded_table(value: bytes) -> tuple[int, Any]:
    """pamqp's table decoder, or the marker for a table nested too deep for it."""
    depth = nesting(value)
    if depth is not None and depth > MAX_HEADER_NESTING:
        (length,) = _LENGTH.unpack_from(value, 0)
        reason = f"header tables nested deeper than {MAX_HEADER_NESTING} levels"
        return 4 + length, {REFUSED: reason}
    return decode.field_table(value)
