"""Personal data and secrets kept out of logs and dead-letter headers.

Two layers: the values of configured fields of the event being handled are
replaced wherever they appear in an error text (a validation message that
quotes an e-mail address, say); and patterns (card numbers that pass the Luhn
check, e-mail addresses) are replaced in every log line and parked-message
header, whatever their source.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_MIN_VALUE_CHARS = 3


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return MASK if _luhn(digits) else match.group(0)


class Masker:
    """Masks configured field values and known patterns in text."""

    def __init__(self, fields: Iterable[str] = (), patterns: Iterable[str] = ("card", "email")):
        self.fields = {field.lower() for field in fields}
        self.patterns = set(patterns)

    def values(self, data: Any) -> set[str]:
        """The values of the configured fields, at any depth of ``data``."""
        found: set[str] = set()
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for key, value in item.items():
                    if str(key).lower() in self.fields and isinstance(value, str | int | float):
                        text = str(value)
                        if len(text) >= _MIN_VALUE_CHARS:
                            found.add(text)
                    stack.append(value)
            elif isinstance(item, list):
                stack.extend(item)
        return found

    def text(self, text: str, data: Any = None) -> str:
        """``text`` with the fields' values of ``data`` and the known patterns masked."""
        for value in sorted(self.values(data), key=len, reverse=True):
            text = text.replace(value, MASK)
        if "card" in self.patterns:
            text = _CARD.sub(_mask_card, text)
        if "email" in self.patterns:
            text = _EMAIL.sub(MASK, text)
        return text
