"""JSON Schema (Draft 2020-12) validation that runs in time linear in the data.

jsonschema matches ``pattern`` and ``patternProperties`` with Python's
backtracking ``re``: ``^(a+)+$`` against 28 characters takes seconds, against
50,000 it never ends. Here every regular expression of a schema runs on RE2,
whose matching time is linear in the text; a pattern RE2 cannot compile (a
backreference, a lookaround) is refused when the route is loaded.

The keywords that match patterns are jsonschema's own, with ``re.search``
replaced by RE2's: ``pattern``, ``patternProperties``, and the two that look
patterns up to find which properties are left (``additionalProperties``,
``unevaluatedProperties``). ``uniqueItems``, quadratic in jsonschema for
objects and mixed arrays, compares canonical keys in linear time. ``format``
asserts only the formats whose checkers are linear (:data:`FORMATS`); any other
format stays an annotation, as Draft 2020-12 makes it by default.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import jsonschema_rs
import re2
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator

from esb.errors import ConfigError

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False

#: Longest valid text of a length-bounded format: longer text is refused unparsed.
_MAX_CHARS = {"ipv4": len("255.255.255.255"), "ipv6": len("ffff:" * 6 + "255.255.255.255")}

#: Formats asserted, with jsonschema's checkers where those are linear.
SAFE_FORMATS = ("date", "email", "idn-email", "idn-hostname", "ipv4", "ipv6", "uuid")


@lru_cache(maxsize=4096)
def regex(pattern: str) -> re2._Regexp[str]:
    """A schema's pattern compiled by RE2 (schemas are configuration: the cache stays small)."""
    return re2.compile(pattern, _OPTIONS)


def _is_regex(instance: object) -> bool:
    """Whether a value of the data compiles; RE2's module cache must not keep hostile ones."""
    if isinstance(instance, str):
        try:
            re2.compile(instance, _OPTIONS)
        finally:
            re2.purge()
    return True


def _bounded(name: str, check: Callable[[object], bool]) -> Callable[[object], bool]:
    limit = _MAX_CHARS.get(name)
    if limit is None:
        return check
    return lambda instance: (
        not (isinstance(instance, str) and len(instance) > limit) and check(instance)
    )


def _format_checker() -> FormatChecker:
    checker = FormatChecker(())
    stock = Draft202012Validator.FORMAT_CHECKER.checkers
    for name in SAFE_FORMATS:
        if name in stock:
            check, raises = stock[name]
            checker.checks(name, raises)(_bounded(name, check))
    checker.checks("regex", re2.error)(_is_regex)
    return checker


#: The format checker of validate steps, and of the patterns of schemas at load time.
FORMATS = _format_checker()


def _pattern(
    validator: Any, patrn: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not regex(patrn).search(instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(
    validator: Any, pattern_properties: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        compiled = regex(pattern)
        for key, value in instance.items():
            if compiled.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _matches_a_pattern(schema: dict[str, Any], key: str) -> bool:
    return any(regex(pattern).search(key) for pattern in schema.get("patternProperties", {}))


def _extras(extras: list[Any]) -> tuple[str, str]:
    return ", ".join(repr(extra) for extra in extras), "was" if len(extras) == 1 else "were"


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    extras = {
        key for key in instance if key not in properties and not _matches_a_pattern(schema, key)
    }
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            listed, verb = _extras(sorted(extras, key=str))
            yield ValidationError(
                f"Additional properties are not allowed ({listed} {verb} unexpected)"
            )


def _valid(errors: Iterator[ValidationError]) -> bool:
    return next(errors, None) is None


def _evaluated_keys(validator: Any, instance: dict[str, Any], schema: Any) -> list[str]:
    """jsonschema's ``find_evaluated_property_keys_by_schema``, patterns on RE2."""
    if validator.is_type(schema, "boolean"):
        return []
    keys: list[str] = []
    for reference in ("$ref", "$dynamicRef"):
        if (ref := schema.get(reference)) is not None:
            resolved = validator._resolver.lookup(ref)
            keys += _evaluated_keys(
                validator.evolve(schema=resolved.contents, _resolver=resolved.resolver),
                instance,
                resolved.contents,
            )
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys += properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if (subschema := schema.get(keyword)) is not None:
            keys += (k for k, v in instance.items() if _valid(validator.descend(v, subschema)))
    for pattern in schema.get("patternProperties", {}):
        compiled = regex(pattern)
        keys += (k for k in instance if compiled.search(k))
    for key, subschema in schema.get("dependentSchemas", {}).items():
        if key in instance:
            keys += _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _valid(validator.descend(instance, subschema)):
                keys += _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys += _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys += _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys += _evaluated_keys(validator, instance, schema["else"])
    return keys


def _unevaluated_properties(
    validator: Any, unevaluated: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = set(_evaluated_keys(validator, instance, schema))
    failed = [
        key
        for key in instance
        if key not in evaluated
        and not _valid(validator.descend(instance[key], unevaluated, path=key, schema_path=key))
    ]
    if failed:
        if unevaluated is False:
            listed, verb = _extras(sorted(failed, key=str))
            yield ValidationError(
                f"Unevaluated properties are not allowed ({listed} {verb} unexpected)"
            )
        else:
            listed, verb = _extras(failed)
            yield ValidationError(
                "Unevaluated properties are not valid under the given schema "
                f"({listed} {verb} unevaluated and invalid)"
            )


_TRUE, _FALSE = object(), object()


def _canonical(value: Any) -> Any:
    """A hashable key, equal for JSON-equal values: 1 is 1.0, true is not 1, key order is moot."""
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    if isinstance(value, dict):
        return frozenset((key, _canonical(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return tuple(_canonical(item) for item in value)
    return value


def _unique_items(
    validator: Any, unique: bool, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if (
        unique
        and validator.is_type(instance, "array")
        and len({_canonical(item) for item in instance}) != len(instance)
    ):
        yield ValidationError(f"{instance!r} has non-unique elements")


#: Draft 2020-12 with every regular expression on RE2 and linear ``uniqueItems``.
LinearValidator: type[Validator] = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "unevaluatedProperties": _unevaluated_properties,
        "uniqueItems": _unique_items,
    },
    format_checker=FORMATS,
)


def _reason(cause: BaseException | None) -> str:
    """RE2's own words: its errors carry them as bytes."""
    reason = cause.args[0] if cause is not None and cause.args else cause
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


#: A backslash class whose meaning differs between RE2 (ASCII) and Rust's regex (Unicode).
_PERL_CLASS = re.compile(r"\\[dDwWsSbBpP]")


def _agrees(node: Any) -> bool:
    """Whether jsonschema-rs reads this schema exactly as :data:`LinearValidator` does.

    They differ on formats (asserted here only when linear), on ``\\d``, ``\\w``,
    ``\\s``, ``\\b`` and ``\\p`` in patterns (ASCII on RE2, Unicode in Rust) and on
    ``multipleOf`` (float arithmetic: even ``multipleOf: 3`` parts them on a float
    such as 3.775957434997146e16); a schema using any of them has no fast check.
    """
    if isinstance(node, list):
        return all(_agrees(item) for item in node)
    if not isinstance(node, dict):
        return True
    if "format" in node:
        return False
    patterns = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
    if isinstance(node.get("patternProperties"), dict):
        patterns += list(node["patternProperties"])
    if any(_PERL_CLASS.search(pattern) for pattern in patterns):
        return False
    if "multipleOf" in node:
        return False
    return all(_agrees(value) for value in node.values())


def fast_check(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """``is_valid`` of a compiled jsonschema-rs validator (a hundred times quicker, its
    regular expressions linear too) where it agrees with :data:`LinearValidator`, else None.

    Only its "valid" is taken: for data it refuses, LinearValidator judges and
    words the error, so verdicts and messages stay those of jsonschema.
    """
    if not _agrees(schema):
        return None
    try:
        validator = jsonschema_rs.Draft202012Validator(
            schema, validate_formats=False, pattern_options=jsonschema_rs.RegexOptions()
        )
    except (jsonschema_rs.ValidationError, ValueError):
        return None
    return validator.is_valid


def compile_schema(schema: dict[str, Any], name: str) -> Validator:
    """A validator for ``schema``; ConfigError naming the schema when it is not valid
    Draft 2020-12 or has a pattern RE2 cannot run."""
    try:
        Draft202012Validator.check_schema(schema, format_checker=FORMATS)
    except SchemaError as exc:
        if exc.validator == "format" and exc.validator_value == "regex":
            where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
            raise ConfigError(
                f"schema {name!r}: pattern {exc.instance!r} at {where} cannot run on RE2, "
                f"the linear-time regular expression engine: {_reason(exc.cause)}"
            ) from None
        raise ConfigError(f"not a valid JSON Schema: {exc.message}") from None
    return LinearValidator(schema, format_checker=FORMATS)
