"""MQTT topic strings: subscription filters, event types from topics, topics from events.

Templates are checked when the settings load, so a typo fails at startup;
what only an event can tell (a missing field) fails that one message.
"""

from __future__ import annotations

import re

from esb import SHORT_STRING_BYTES, CloudEvent, EnvelopeError, EventRef, PermanentError, Template

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_LEVEL = re.compile(r"[1-9][0-9]*")
#: The attributes a topic placeholder may name, beside ``{data.<path>}``.
_TOPIC_ATTRIBUTES = ("id", "type", "source", "subject")
_WILDCARDS = ("+", "#", "\0")
#: What an event's value may not hold in a topic: a level separator would move the message to
#: other levels (another site's topic), wildcards and NUL are invalid in a topic name.
_NOT_IN_A_VALUE = ("/", *_WILDCARDS)
#: What Mosquitto (mosquitto_validate_utf8) refuses in a topic, dropping the connection:
#: control characters, surrogates and Unicode noncharacters.
_UNFIT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
#: What one topic level may not hold to be one word of an event type (a routing key): a dot
#: would add words (and match other routes), ``*``, ``#`` and spaces are not words.
_NOT_A_WORD = re.compile(r"[.*#\s]")
#: MQTT's limit on a topic name (a UTF-8 string with a 2-byte length).
MAX_TOPIC_BYTES = 65_535


def check_filter(topic_filter: str) -> None:
    """A valid subscription filter: ``+`` alone in its level, ``#`` alone and last."""
    if not topic_filter or "\0" in topic_filter:
        raise ValueError(f"topic filter {topic_filter!r} is empty or holds NUL")
    levels = topic_filter.split("/")
    for number, level in enumerate(levels, start=1):
        if "#" in level and (level != "#" or number != len(levels)):
            raise ValueError(f"topic filter {topic_filter!r}: # must be a whole, last level")
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {topic_filter!r}: + must be a whole level")


def check_type_template(template: str) -> None:
    for name in _PLACEHOLDER.findall(template):
        if name != "topic" and not _LEVEL.fullmatch(name):
            raise ValueError(f"unknown placeholder {{{name}}}: use {{topic}} or {{1}}, {{2}}, ...")


def _unfit(text: str) -> bool:
    """Whether ``text`` holds a character an MQTT broker refuses in a topic."""
    return _UNFIT.search(text) is not None or any(
        ord(char) > 0xFFFF and ord(char) & 0xFFFE == 0xFFFE for char in text
    )


def event_type(template: str, topic: str) -> str:
    """``template`` filled from ``topic``; EnvelopeError when it has fewer levels than named.

    Each level used must be one word of the type: a level ``shop.order.paid``
    would make ``plant.shop.order.paid.reading`` and reach routes on
    ``shop.order.#``, so its message is refused rather than misrouted.
    """
    levels = topic.split("/")

    def word(level: str, name: str) -> str:
        if _NOT_A_WORD.search(level):
            raise EnvelopeError(
                "type",
                f"{{{name}}}: topic level {level[:80]!r} is not one word (., *, # or a space)",
                "invalid_attribute",
            )
        return level

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "topic":
            return ".".join(word(level, name) for level in levels)
        if int(name) > len(levels):
            raise EnvelopeError("type", f"{{{name}}}: topic {topic!r} has {len(levels)} levels")
        return word(levels[int(name) - 1], name)

    filled = _PLACEHOLDER.sub(value, template)
    if len(filled.encode("utf-8", "surrogatepass")) > SHORT_STRING_BYTES:
        raise EnvelopeError(
            "type", f"{filled[:80]!r}... is over {SHORT_STRING_BYTES} bytes", "invalid_attribute"
        )
    return filled


def topic_template(template: str) -> Template:
    """The ``topic`` setting compiled; ValueError for an unknown placeholder or a wildcard."""
    if not template:
        raise ValueError("the topic template is empty")
    compiled = Template.compile(template, "topic", attributes=_TOPIC_ATTRIBUTES)
    if any(char in literal for literal in compiled.literals for char in _WILDCARDS):
        raise ValueError(f"topic {template!r}: + and # are for subscriptions, not for publishing")
    return compiled


def _level(ref: EventRef, text: str) -> str:
    """A value as (part of) one topic level: refused, not escaped, if it would be more."""
    shown = text if len(text) <= 80 else text[:80] + "..."
    if any(char in text for char in _NOT_IN_A_VALUE):
        raise PermanentError(f"topic: {ref} {shown!r} holds /, +, # or NUL (one topic level only)")
    if _unfit(text):
        raise PermanentError(
            f"topic: {ref} {shown!r} holds a control character or a Unicode "
            "noncharacter, which MQTT brokers refuse"
        )
    return text


def render_topic(template: Template, event: CloudEvent) -> str:
    """The topic for ``event``; PermanentError names a field that is missing, empty or unfit.

    A value fills exactly one level, or part of one: ``/``, ``+``, ``#`` and NUL
    in it are refused, not escaped (MQTT has no escape, and a look-alike would
    reach a topic nobody subscribes to); so are control characters and Unicode
    noncharacters, for which Mosquitto drops the connection (every retry would
    knock the sink offline again). A topic that would start with ``$``
    (reserved for the broker) or exceed 65,535 bytes is refused too.
    """
    topic = template.render(event, _level)
    if topic.startswith("$"):
        raise PermanentError(f"topic: {topic[:80]!r} starts with $, reserved for the broker")
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise PermanentError(f"topic: longer than MQTT's {MAX_TOPIC_BYTES} bytes")
    return topic
