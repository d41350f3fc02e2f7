"""The limits every input is held to, in one place.

Sources refuse input beyond them at their edge (HTTP 4xx, a refused file, an
acknowledged-and-counted MQTT message); consumers park a delivery beyond them
with its reason. Both read these numbers, so what a source accepts every
consumer can decode and every hop can publish again:

- AMQP 0-9-1 carries ``message_id``, ``type``, ``correlation_id``,
  ``content_type`` and header names as *short strings* of at most 255 bytes,
  so the attributes mapped onto them are held to that.
- orjson reads JSON nested up to 1,024 levels but writes at most 254, and
  Python's own ``json`` (the duplicate-key check) recurses per level: data is
  held to :data:`MAX_DEPTH`, far below both and far above any business
  document.
- Integers beyond 64 bits would come back from orjson as floats, losing
  digits silently: they are refused (send such numbers as strings).
"""

from __future__ import annotations

#: Bytes in an AMQP short string: ``message_id``, ``type``, ``correlation_id``,
#: ``content_type`` and every header name.
SHORT_STRING_BYTES = 255

#: Bytes in any other attribute (``source``, ``subject``, ``dataschema``, an extension value).
MAX_ATTRIBUTE_BYTES = 4096

#: Extensions on one event, and the bytes of all attributes and extensions together: an
#: event's headers must leave room within MAX_HEADERS and MAX_HEADER_BYTES for what a
#: retry or a parking lot adds (esb's x-esb-* and RabbitMQ's x-death, about 20 and 3 KiB).
MAX_EXTENSIONS = 32
MAX_ATTRIBUTES_BYTES = 8192

#: Nesting of objects and arrays in ``data``.
MAX_DEPTH = 64

#: Headers on one delivery, their total size (names and values) in bytes, and how deep
#: tables and arrays may nest in them (RabbitMQ's own x-death nests 4 levels).
MAX_HEADERS = 96
MAX_HEADER_BYTES = 32_768
MAX_HEADER_NESTING = 8

#: Bodies larger than this are decoded, routed and transformed in a worker thread, so the
#: event loop (health probes, broker heartbeats, other deliveries) keeps answering; smaller
#: ones are cheaper to handle inline than to hand over.
INLINE_BODY_BYTES = 65_536

#: Default largest body (``broker.max_body_bytes``); sources' own limits may not exceed it.
DEFAULT_MAX_BODY_BYTES = 1_048_576
