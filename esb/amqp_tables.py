"""The AMQP field-table codec esb plugs into pamqp, for the headers every message carries.

Each hop decodes and encodes about ten headers (the ``ce-`` attributes, the
routing slip), all flat strings. pamqp handles a table value by value through
generic dispatch and copies the rest of the frame after each one: a tenth of a
router's CPU went there. Here a flat table is read and written in one pass;
strings and booleans directly, other scalars by pamqp's own value codecs. A
nested table, anything malformed, or a key pamqp would truncate goes to pamqp
as a whole (decoding through :mod:`esb.amqp_guard`'s nesting guard), so the
result, the bytes and the errors are always pamqp's own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pamqp import decode, encode

from esb.amqp_guard import guarded_table

_LENGTH = struct.Struct(">I")
#: pamqp truncates longer keys (with a warning); such a table is left to pamqp.
_MAX_KEY_BYTES = 128
_STRING, _BOOLEAN = ord("S"), ord("t")
_NESTED = {ord("F"), ord("A")}
_TRUE, _FALSE = b"t\x01", b"t\x00"
_SCALARS: dict[int, Callable[[bytes], tuple[int, Any]]] = {
    tag[0]: decoder for tag, decoder in decode.TABLE_MAPPING.items() if tag[0] not in _NESTED
}


def encode_table(value: Any) -> bytes:
    """pamqp's ``field_table``, byte for byte, keys sorted as it sorts them."""
    if not value or not isinstance(value, dict):
        return encode.field_table(value)
    parts: list[bytes] = []
    for key, item in sorted(value.items()):
        name = key.encode()
        if len(name) > _MAX_KEY_BYTES:
            return encode.field_table(value)
        parts.append(len(name).to_bytes(1, "big"))
        parts.append(name)
        kind = type(item)
        if kind is str:
            text = item.encode()
            parts.append(b"S")
            parts.append(_LENGTH.pack(len(text)))
            parts.append(text)
        elif kind is bool:
            parts.append(_TRUE if item else _FALSE)
        else:
            try:
                parts.append(encode.encode_table_value(item))
            except TypeError as err:
                raise TypeError(f"{key} error: {err}") from err
    body = b"".join(parts)
    return _LENGTH.pack(len(body)) + body


def decode_table(data: bytes) -> tuple[int, dict[str, Any]]:
    """pamqp's ``field_table`` behind the nesting guard: bytes consumed and the table."""
    try:
        (length,) = _LENGTH.unpack_from(data, 0)
        end = 4 + length
        if end > len(data):
            return guarded_table(data)
        position = 4
        table: dict[str, Any] = {}
        while position < end:
            key_end = position + 1 + data[position]
            if key_end > end:
                return guarded_table(data)
            key = data[position + 1 : key_end].decode()
            tag = data[key_end]
            position = key_end + 1
            if tag == _STRING:
                (size,) = _LENGTH.unpack_from(data, position)
                start, position = position + 4, position + 4 + size
                raw = data[start:position]
                try:
                    table[key] = raw.decode()
                except UnicodeDecodeError:
                    table[key] = raw
            elif tag == _BOOLEAN:
                table[key] = data[position] != 0
                position += 1
            elif tag in _SCALARS:
                consumed, table[key] = _SCALARS[tag](data[position:])
                position += consumed
            else:
                return guarded_table(data)
        return end, table
    except (IndexError, struct.error, ValueError):
        return guarded_table(data)


def install_table_codecs() -> None:
    """Make pamqp encode and decode every field table (message headers among them) here."""
    encode.METHODS["table"] = encode_table
    decode.METHODS["table"] = decode_table
