"""The ``convert`` step: dates, times and zones, money as Decimal, numbers and units."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from esb.routing.model import Conversion

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


def _parse_datetime(value: Any, fmt: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return datetime.fromisoformat(value) if fmt == "iso" else datetime.strptime(value, fmt)


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
        quantum = Decimal(1).scaleb(-m.places)

        def convert_decimal(value: Any) -> Any:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError(f"expected a number or numeric string, got {type(value).__name__}")
            try:
                amount = Decimal(
                    str(value).strip().replace(",", ".") if isinstance(value, str) else str(value)
                )
            except InvalidOperation:
                raise ValueError(f"{value!r} is not a number") from None
            rounded = amount.quantize(quantum, rounding=ROUND_HALF_EVEN)
            return str(rounded) if m.as_ == "string" else float(rounded)

        return convert_decimal
    if spec.number is not None:
        kind = spec.number

        def convert_number(value: Any) -> Any:
            if isinstance(value, bool):
                raise ValueError("expected a number, got a boolean")
            number = Decimal(str(value).strip())
            if kind == "float":
                return float(number)
            if number != number.to_integral_value():
                raise ValueError(f"{value!r} is not a whole number")
            return int(number)

        return convert_number
    if spec.unit is None:
        raise ValueError("a conversion needs one of date, datetime, decimal, number, unit")
    u = spec.unit
    factor = unit_factor(u.from_, u.to)

    def convert_unit(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"expected a number, got {type(value).__name__}")
        result = Fraction(Decimal(str(value))) * factor
        if u.places is None:
            return float(result)
        return float(round(Decimal(result.numerator) / Decimal(result.denominator), u.places))

    return convert_unit
