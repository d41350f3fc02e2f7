"""AMQP topic-pattern matching (``*`` one word, ``#`` zero or more), as RabbitMQ does it."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split("."))


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether ``routing_key`` matches the binding ``pattern``."""
    return _match(_words(pattern), _words(routing_key))


def _match(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, key[i:]) for i in range(len(key) + 1))
    if not key:
        return False
    return (head in ("*", key[0])) and _match(rest, key[1:])
