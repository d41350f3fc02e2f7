"""The ``convert`` step: dates, times and zones, money as Decimal, numbers and units.

Values come from messages, so every conversion is bounded whatever they hold:
text longer than :data:`MAX_INPUT_CHARS` is refused unparsed, numbers must be
finite with at most :data:`MAX_EXPONENT` powers of ten (``int(Decimal("1e1000000"))``
takes half a minute, ``Fraction`` of a million-digit fraction longer), integers
must fit 64 bits as everywhere on the bus, and every failure is a ValueError
or ArithmeticError, which the step turns into a permanent error naming the field.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from esb.routing.model import Conversion

#: Characters of a date, time or numeric text a conversion parses.
MAX_INPUT_CHARS = 255

#: Largest power of ten (either sign) of a number converted; floats end at 1e308.
MAX_EXPONENT = 400

#: Integers the bus carries: JSON numbers of 64 bits, signed or not.
_INT_MIN, _INT_END = -(2**63), 2**64

#: Units by dimension, as exact factors to the dimension's base unit.
UNITS: dict[str, dict[str, Fraction]] = {
    "mass": {
        "mg": Fraction(1, 1000),
        "g": Fraction(1),
        "kg": Fraction(1000),
        "oz": Fraction(28349523125, 10**9),
        "lb": Fraction(45359237, 10**5),
        "t": Fraction(10**6),
    },
    "length": {
        "mm": Fraction(1, 1000),
        "cm": Fraction(1, 100),
        "m": Fraction(1),
        "km": Fraction(1000),
        "in": Fraction(254, 10**4),
        "ft": Fraction(3048, 10**4),
        "yd": Fraction(9144, 10**4),
        "mi": Fraction(1609344, 1000),
    },
    "volume": {
        "ml": Fraction(1, 1000),
        "cl": Fraction(1, 100),
        "l": Fraction(1),
        "m3": Fraction(1000),
        "gal": Fraction(3785411784, 10**9),
    },
}


def unit_factor(source: str, target: str) -> Fraction:
    """Factor from ``source`` to ``target`` units; ValueError when they are not comparable."""
    for units in UNITS.values():
        if source in units and target in units:
            return units[source] / units[target]
    known = ", ".join(unit for units in UNITS.values() for unit in units)
    raise ValueError(f"cannot convert {source!r} to {target!r} (known units: {known})")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


Converter = Callable[[Any], Any]


def _shown(value: Any) -> str:
    """``value`` for an error message: long text is abbreviated."""
    return reprlib.repr(value)


def _bounded(text: str) -> str:
    if len(text) > MAX_INPUT_CHARS:
        raise ValueError(f"{len(text)} characters are too many (at most {MAX_INPUT_CHARS})")
    return text


def _parse_datetime(value: Any, fmt: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    text = _bounded(value)
    return datetime.fromisoformat(text) if fmt == "iso" else datetime.strptime(text, fmt)


def _number(value: Any, *, decimal_comma: bool = False) -> Decimal:
    """``value`` (a number or numeric text) as a finite Decimal of bounded size."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number or numeric string, got {type(value).__name__}")
    text = _bounded(value.strip() if isinstance(value, str) else str(value))
    try:
        number = Decimal(text.replace(",", ".") if decimal_comma else text)
    except InvalidOperation:
        raise ValueError(f"{_shown(value)} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{_shown(value)} is not a finite number")
    if number and abs(number.adjusted()) > MAX_EXPONENT:
        raise ValueError(f"{_shown(value)} is out of range (at most 1e{MAX_EXPONENT})")
    return number


def _rounded(amount: Decimal, places: int) -> Decimal:
    try:
        return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        raise ValueError(f"{_shown(amount)} has too many digits for {places} places") from None


def _float(number: Decimal | Fraction) -> float:
    try:
        result = float(number)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise ValueError(f"{_shown(number)} is beyond the range of a float")
    return result


def compile_conversion(spec: Conversion) -> Converter:
    """A function from the field's value to its converted value; checks zones and units now."""
    if spec.date is not None:
        d = spec.date

        def convert_date(value: Any) -> Any:
            parsed: date = _parse_datetime(value, d.from_).date()
            return parsed.isoformat() if d.to == "iso" else parsed.strftime(d.to)

        return convert_date
    if spec.datetime is not None:
        t = spec.datetime
        assume = zone(t.assume_timezone)
        target = zone(t.to_timezone) if t.to_timezone else None

        def convert_datetime(value: Any) -> Any:
            parsed = _parse_datetime(value, t.from_)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=assume)
            if target is not None:
                parsed = parsed.astimezone(target)
            return parsed.isoformat() if t.to == "iso" else parsed.strftime(t.to)

        return convert_datetime
    if spec.decimal is not None:
        m = spec.decimal

        def convert_decimal(value: Any) -> Any:
            rounded = _rounded(_number(value, decimal_comma=isinstance(value, str)), m.places)
            return str(rounded) if m.as_ == "string" else _float(rounded)

        return convert_decimal
    if spec.number is not None:
        kind = spec.number

        def convert_number(value: Any) -> Any:
            number = _number(value)
            if kind == "float":
                return _float(number)
            if number != number.to_integral_value():
                raise ValueError(f"{_shown(value)} is not a whole number")
            if not _INT_MIN <= number < _INT_END:
                raise ValueError(f"{_shown(value)} does not fit 64 bits")
            return int(number)

        return convert_number
    if spec.unit is None:
        raise ValueError("a conversion needs one of date, datetime, decimal, number, unit")
    u = spec.unit
    factor = unit_factor(u.from_, u.to)

    def convert_unit(value: Any) -> Any:
        result = Fraction(_number(value)) * factor
        if u.places is None:
            return _float(result)
        return _float(_rounded(Decimal(result.numerator) / Decimal(result.denominator), u.places))

    return convert_unit
