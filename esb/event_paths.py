"""Event paths and templates: one way to name a value of an event, and one rule for a missing one.

Every setting that names a value of an event (a route's converted field, a SQL
column, a CSV column, a correlation field, an http-poll field) or fills a
template from one (the http sink's URL, the MQTT sink's topic) is parsed here
when the settings load, so a typo fails at startup, and is walked here for each
event, so every adapter agrees on what is missing:

**A value is missing when a name on its path is absent, when the path passes
through something that is not an object (a list, a string, a number), or when
the value is JSON null.** Walking returns None for a missing value and never
raises; the caller decides what missing means (NULL in a SQL column, an empty
CSV cell); a template refuses the event with ``PermanentError`` in the same
words for every adapter: ``url: the event has no data.order.id``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator

from esb.envelope import CloudEvent
from esb.errors import PermanentError
from esb.limits import MAX_DEPTH

#: ``order_id``, ``order.number``: names of letters, digits, ``_`` and ``-``, joined by dots
#: (at most 64 characters a name, and no deeper than data may nest).
FIELD_PATH = re.compile(
    rf"[A-Za-z0-9_-]{{1,64}}(?:\.[A-Za-z0-9_-]{{1,64}}){{0,{MAX_DEPTH - 1}}}", re.ASCII
)

#: The attributes a reference may name, beside ``data``.
ATTRIBUTES = ("id", "type", "source", "subject", "time")

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class DataPath:
    """A dotted path into an object, parsed once; ``names`` is empty for the object itself."""

    names: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> DataPath:
        """The path ``text`` names; ValueError (one line, quoting it) when it is not one."""
        if not FIELD_PATH.fullmatch(text):
            raise ValueError(
                f"{text[:200]!r} is not a field path: names of letters, digits, _ and -, "
                "joined by dots (order_id, order.number)"
            )
        return cls(tuple(text.split(".")))

    def __str__(self) -> str:
        return ".".join(self.names)

    def value_in(self, data: Any) -> Any:
        """The value at this path of ``data``; None when it is missing (see the module rule)."""
        for name in self.names:
            if not isinstance(data, dict):
                return None
            data = data.get(name)
        return data


def _checked(text: str) -> str:
    DataPath.parse(text)
    return text


#: A settings field that holds a dotted path: checked when the settings load, kept as text.
FieldPath = Annotated[str, AfterValidator(_checked)]


@dataclass(frozen=True)
class EventRef:
    """A value of an event: an attribute (``subject``), or a path under a root (``data.a.b``).

    A root is ``data`` or a value the caller supplies by name (the SQL sink's
    ``row``, one element of a list in the event).
    """

    head: str
    path: DataPath

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        attributes: Collection[str] = ATTRIBUTES,
        roots: Collection[str] = ("data",),
        whole_roots: bool = False,
    ) -> EventRef:
        """The reference ``text`` names; ValueError listing the valid ones when it names none.

        ``whole_roots``: a bare root (``data``) names the whole value, not only a path in it.
        """
        head, dot, rest = text.partition(".")
        if head in roots and (dot or whole_roots):
            try:
                return cls(head, DataPath.parse(rest) if dot else DataPath(()))
            except ValueError:
                pass
        elif head in attributes and not dot:
            return cls(head, DataPath(()))
        listed = _listing(_valid(attributes, roots, whole_roots))
        raise ValueError(f"{text[:200]!r} is not {listed}")

    def __str__(self) -> str:
        return ".".join((self.head, *self.path.names))

    def value_of(self, event: CloudEvent, **roots: Any) -> Any:
        """The value in ``event`` (or in the root of that name); None when it is missing."""
        if self.head in roots:
            return self.path.value_in(roots[self.head])
        if self.head == "data":
            return self.path.value_in(event.data)
        return getattr(event, self.head)

    @property
    def missing(self) -> str:
        """What every adapter says of an event without this value: ``the event has no REF``."""
        return f"the event has no {self}"

    def require(self, event: CloudEvent, where: str, **roots: Any) -> Any:
        """The value in ``event``; ``PermanentError("WHERE: the event has no REF")`` if missing."""
        value = self.value_of(event, **roots)
        if value is None:
            raise PermanentError(f"{where}: {self.missing}")
        return value


def _valid(attributes: Collection[str], roots: Collection[str], whole_roots: bool) -> list[str]:
    """The references a setting accepts, for its error."""
    return [*attributes, *(roots if whole_roots else ()), *(f"{root}.<path>" for root in roots)]


def _listing(names: list[str]) -> str:
    """``a, b or c``."""
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


#: What fills a placeholder: given its reference and the value's text, the text to insert
#: (or a PermanentError), e.g. URL-quoted, or refused when it would cross an MQTT topic level.
Fill = Callable[[EventRef, str], str]


def _as_is(ref: EventRef, text: str) -> str:
    return text


@dataclass(frozen=True)
class Template:
    """Text with ``{placeholders}`` filled from an event, compiled once.

    ``literals`` is the text around the placeholders (one more than ``refs``);
    ``what`` names the setting in the messages of a refused event.
    """

    what: str
    literals: tuple[str, ...]
    refs: tuple[EventRef, ...]

    @classmethod
    def compile(
        cls,
        text: str,
        what: str,
        *,
        attributes: Collection[str] = ATTRIBUTES,
        whole_roots: bool = False,
    ) -> Template:
        """The template ``text``; ValueError naming an unknown placeholder and the valid ones."""
        pieces = _PLACEHOLDER.split(text)
        refs = []
        for name in pieces[1::2]:
            try:
                refs.append(EventRef.parse(name, attributes=attributes, whole_roots=whole_roots))
            except ValueError:
                valid = [f"{{{ref}}}" for ref in _valid(attributes, ("data",), whole_roots)]
                raise ValueError(
                    f"unknown placeholder {{{name[:200]}}}: use {_listing(valid)}"
                ) from None
        return cls(what, tuple(pieces[0::2]), tuple(refs))

    def render(self, event: CloudEvent, fill: Fill = _as_is) -> str:
        """The text for ``event``; PermanentError for a value that is missing, empty, or an
        object or a list (none of which can stand in text), or that ``fill`` refuses."""
        out = [self.literals[0]]
        for ref, literal in zip(self.refs, self.literals[1:], strict=True):
            value = ref.require(event, self.what)
            if isinstance(value, dict | list):
                raise PermanentError(f"{self.what}: {ref} is not a single value")
            text = str(value)
            if not text:
                raise PermanentError(f"{self.what}: {ref} is empty")
            out += [fill(ref, text), literal]
        return "".join(out)
