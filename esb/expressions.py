"""Route conditions and computed values in CEL, the Common Expression Language.

CEL (via the Rust-backed ``common-expression-language`` package) is safe by
construction: no I/O, no loops beyond macros over the event's own (size-bounded)
data, no Python ``eval``. Expressions are compiled once when routes load; a
syntax error, an unknown name or a type error between attributes and literals
is refused there. Evaluation builds one context per event and reuses it for
every route (building it costs more than evaluating an expression).
``has()`` of a nested field is false when a parent is missing or null, not an
error as in standard CEL (see :func:`guard_presence`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from esb.cel_engine import Context, compile_program
from esb.envelope import CloudEvent

MAX_EXPRESSION_CHARS = 4096
#: The deepest path ``has()`` takes: each parent is tested, so the compiled size is quadratic.
MAX_PRESENCE_DEPTH = 16

#: Names an expression may use: the CloudEvents attributes, ``data`` and ``extensions``.
VARIABLES = frozenset(
    {
        "id",
        "source",
        "type",
        "specversion",
        "time",
        "subject",
        "datacontenttype",
        "dataschema",
        "data",
        "correlationid",
        "causationid",
        "traceparent",
        "extensions",
    }
)

_BOUND_NAME = r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*{name}\s*,"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_Q3, _A3 = '"' * 3, "'" * 3
_RAW_STRING = (
    rf"(?:[rR][bB]?|[bB][rR])(?:{_Q3}[\s\S]*?{_Q3}|{_A3}[\s\S]*?{_A3}"
    r"""|"[^"\n]*"|'[^'\n]*')"""
)
_STRING = (
    rf"[bB]?(?:{_Q3}(?:\\.|[^\\])*?{_Q3}|{_A3}(?:\\.|[^\\])*?{_A3}"
    r"""|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')"""
)
#: A string literal (passed over: text in it is not code), or ``has()`` of a dotted path of
#: three names or more, whose parents may be missing.
_STRING_OR_NESTED_HAS = re.compile(
    rf"(?P<string>{_RAW_STRING}|{_STRING})"
    rf"|(?<![\w.])has\s*\(\s*(?P<path>{_IDENT}(?:\s*\.\s*{_IDENT}){{2,}})\s*\)"
)
_DATA = re.compile(r"\bdata\b")
_DATA_FIELD = re.compile(r"\bdata\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")


class ExpressionError(ValueError):
    """An expression that cannot be compiled, or failed on one event."""


def _probe() -> dict[str, Any]:
    """An event of every attribute with no data: type errors among attributes and literals show."""
    values: dict[str, Any] = {name: "probe" for name in VARIABLES}
    values.update(time=datetime(2000, 1, 1, tzinfo=UTC), data={}, extensions={})
    return values


@dataclass(frozen=True)
class Expression:
    """A compiled CEL expression with its source text."""

    source: str
    program: Any = field(repr=False, compare=False)

    @classmethod
    def compile(cls, source: str) -> Expression:
        """Compile ``source`` or raise :class:`ExpressionError` saying why."""
        if len(source) > MAX_EXPRESSION_CHARS:
            raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
        try:
            program = compile_program(source)  # errors point into the text as written
            guarded = guard_presence(source)
            if guarded != source:
                program = compile_program(guarded)
        except ValueError as exc:
            raise ExpressionError(
                _first_line(str(exc)).removeprefix("Failed to parse expression ")
            ) from None
        unknown = [
            name
            for name in program.variables()
            if name not in VARIABLES
            and not re.search(_BOUND_NAME.format(name=re.escape(name)), source)
        ]
        if unknown:
            known = ", ".join(sorted(VARIABLES))
            raise ExpressionError(f"unknown name {unknown[0]!r} (use one of {known})")
        try:
            program.execute(_probe())
        except (TypeError, RuntimeError) as exc:
            raise ExpressionError(f"{source!r}: {_reason(str(exc))}") from None
        except Exception:  # noqa: S110 - a missing data field is expected: the probe has no data
            pass
        return cls(source, program)

    def evaluate(self, context: Context) -> Any:
        """The value on one event; :class:`ExpressionError` on a missing field or a type."""
        try:
            return self.program.execute(context)
        except KeyError as exc:
            raise ExpressionError(f"no such field {exc}") from None
        except Exception as exc:
            raise ExpressionError(_reason(str(exc))) from None


def guard_presence(source: str) -> str:
    """``has(a.b.c)`` as ``(has(a.b) && a.b != null && has(a.b.c))``: a missing or null
    parent means "not present", not an error.

    CEL's ``has()`` tests only the last field and fails on a missing parent,
    which in a condition counts as no match and sets off the condition-error
    alert on ordinary data. The engine has no option for this and no optional
    syntax (``a.?b``), so the source is rewritten before it is compiled.
    """
    return _STRING_OR_NESTED_HAS.sub(_guarded, source)


def _guarded(match: re.Match[str]) -> str:
    if match["string"] is not None:
        return match[0]
    parts = [part.strip() for part in match["path"].split(".")]
    if len(parts) > MAX_PRESENCE_DEPTH:
        raise ExpressionError(f"has() of a path deeper than {MAX_PRESENCE_DEPTH} names")
    tests = []
    for end in range(2, len(parts)):
        parent = ".".join(parts[:end])
        tests += [f"has({parent})", f"{parent} != null"]
    return f"({' && '.join(tests)} && has({'.'.join(parts)}))"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _reason(text: str) -> str:
    """The first sentence of a CEL error; the rest is generic advice."""
    return _first_line(text).split(". ", 1)[0]


def data_fields(sources: Iterable[str]) -> frozenset[str] | None:
    """The top-level ``data`` fields these expressions read, or None when one of them reads
    ``data`` in any other way (``data[...]``, ``size(data)``): then it gets all of it.

    Converting data into a CEL context costs more than evaluating an expression,
    so a context holds only what its expressions can read. A name that only
    looks like a field (in a string literal, a bound variable's field) just
    adds a field to the context.
    """
    fields: set[str] = set()
    for source in sources:
        named = _DATA_FIELD.findall(source)
        if len(named) != len(_DATA.findall(source)):
            return None
        fields.update(named)
    return frozenset(fields)


@dataclass(frozen=True)
class Reads:
    """What some expressions read of an event: the variables they name, and the fields of
    ``data`` (None: all of it). A context of only these costs a fraction of the whole event's."""

    names: frozenset[str]
    fields: frozenset[str] | None

    @classmethod
    def of(cls, expressions: Iterable[Expression]) -> Reads:
        chosen = list(expressions)
        names = frozenset(
            name for e in chosen for name in e.program.variables() if name in VARIABLES
        )
        return cls(names, data_fields(e.source for e in chosen))


def event_variables(event: CloudEvent, reads: Reads | None = None) -> dict[str, Any]:
    """The CEL variables of one event: all of them, or only what ``reads`` names."""
    if reads is None:
        return {name: _variable(event, name) for name in VARIABLES}
    variables = {name: _variable(event, name) for name in reads.names}
    data = variables.get("data")
    if reads.fields is not None and isinstance(data, dict):
        variables["data"] = {name: data[name] for name in reads.fields if name in data}
    return variables


def _variable(event: CloudEvent, name: str) -> Any:
    return dict(event.extensions) if name == "extensions" else getattr(event, name)


def event_context(event: CloudEvent, reads: Reads | None = None) -> Context:
    """One evaluation context per event, shared by every route's expressions."""
    return Context(event_variables(event, reads))
