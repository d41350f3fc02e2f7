"""Personal data and secrets kept out of logs and dead-letter headers.

Two layers: the values of configured fields of the event being handled are
replaced wherever they appear in an error text (a validation message that
quotes an e-mail address, say); and patterns (card numbers that pass the Luhn
check, e-mail addresses) are replaced in every log line and parked-message
header, whatever their source.

Masking runs on the event loop, on texts a hostile message can make as long
as its body, so its cost is bounded whatever the input: a text is cut to
:data:`MAX_TEXT_CHARS` (a parked message's error header keeps 500), the
patterns run on RE2 (linear time), and at most :data:`MAX_VALUES` field
values, found among the first :data:`MAX_ITEMS` items of the data, are
looked for. Cutting never reveals part of a secret: the text is
masked over a window reaching :data:`MAX_TEXT_CHARS` beyond the cut, every
secret is first overwritten character for character (so positions stay
those of the original text), and only then is the text cut and each
overwritten run shown as one mask. A secret that starts before the cut is
whole inside the window (e-mail addresses and card numbers are shorter than
it, field values are looked for by their first :data:`MAX_TEXT_CHARS`
characters), so it is masked however the cut falls.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Any

import re2

MASK = "***"

#: Characters of a text kept after masking; the rest is replaced by a note of how many.
MAX_TEXT_CHARS = 2000

#: Distinct field values looked for in one text.
MAX_VALUES = 64

#: Items (object members, array elements) of an event's data searched for those values.
MAX_ITEMS = 10_000

_MIN_VALUE_CHARS = 3

#: Overwrites a secret character for character; never left in a masked text.
_HIDDEN = "\x00"
_HIDDEN_RUN = re2.compile(_HIDDEN + "+")

#: An e-mail address within RFC 5321's lengths (local part 64, domain 255): a
#: bounded match, so a window reaching past the cut sees every address that
#: starts before it exactly as the whole text does.
_EMAIL = re2.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,252}\.[A-Za-z]{2,63}")
#: 13 to 19 digits, single spaces or dashes between them.
_CARD = re2.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _hide(match: re2._Match[str]) -> str:
    return _HIDDEN * len(match.group(0))


def _hide_card(match: re2._Match[str]) -> str:
    number = match.group(0)
    return _hide(match) if _luhn("".join(c for c in number if c.isdigit())) else number


def _shown(value: str | float) -> str:
    """How a value appears in a text; an integer too long for ``str`` cannot appear whole."""
    try:
        return str(value)
    except ValueError:
        return ""


class Masker:
    """Masks configured field values and known patterns in text."""

    def __init__(self, fields: Iterable[str] = (), patterns: Iterable[str] = ("card", "email")):
        self.fields = {field.lower() for field in fields}
        self.patterns = set(patterns)

    def values(self, data: Any) -> set[str]:
        """The values of the configured fields in ``data``, shallowest first: at most
        :data:`MAX_VALUES` of them among its first :data:`MAX_ITEMS` items, each cut
        to its first :data:`MAX_TEXT_CHARS` characters (enough to find every
        occurrence that starts before a cut)."""
        found: set[str] = set()
        if not self.fields:
            return found
        queue = deque([data])
        items = 0
        while queue and items < MAX_ITEMS and len(found) < MAX_VALUES:
            item = queue.popleft()
            items += 1
            if isinstance(item, list):
                queue.extend(item)
            elif isinstance(item, dict):
                for key, value in islice(item.items(), MAX_ITEMS - items):
                    if isinstance(value, dict | list):
                        queue.append(value)
                    elif str(key).lower() in self.fields and isinstance(value, str | int | float):
                        text = _shown(value)[:MAX_TEXT_CHARS].replace(_HIDDEN, "\ufffd")
                        if len(text) >= _MIN_VALUE_CHARS and len(found) < MAX_VALUES:
                            found.add(text)
                items += len(item)
        return found

    def text(self, text: str, data: Any = None) -> str:
        """``text`` with the fields' values of ``data`` and the known patterns masked,
        cut to :data:`MAX_TEXT_CHARS` characters."""
        return self._text(text, sorted(self.values(data), key=len, reverse=True))

    def data(self, data: Any) -> Any:
        """``data`` (decoded JSON) with the configured fields' values replaced by
        :data:`MASK` and every string masked as :meth:`text` masks it: the structure is
        kept, so an operator's tool can still print it indented."""
        return self._masked(data, sorted(self.values(data), key=len, reverse=True))

    def _masked(self, item: Any, values: list[str]) -> Any:
        if isinstance(item, dict):
            return {
                key: MASK
                if str(key).lower() in self.fields and isinstance(value, str | int | float)
                else self._masked(value, values)
                for key, value in item.items()
            }
        if isinstance(item, list):
            return [self._masked(value, values) for value in item]
        if isinstance(item, str):
            return self._text(item, values)
        if isinstance(item, int) and not isinstance(item, bool):  # a card number as a number
            return item if self._text(_shown(item), values) == _shown(item) else MASK
        return item

    def _text(self, text: str, values: list[str]) -> str:
        window = text[: 2 * MAX_TEXT_CHARS].replace(_HIDDEN, "\ufffd")
        for value in values:
            window = window.replace(value, _HIDDEN * len(value))
        if "card" in self.patterns:
            window = _CARD.sub(_hide_card, window)
        if "email" in self.patterns:
            window = _EMAIL.sub(_hide, window)
        masked = _HIDDEN_RUN.sub(MASK, window[:MAX_TEXT_CHARS])
        if len(text) > MAX_TEXT_CHARS:
            masked += f"... ({len(text) - MAX_TEXT_CHARS} more characters)"
        return masked
