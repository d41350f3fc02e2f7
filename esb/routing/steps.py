"""The step kinds a route can chain: map, convert, validate and custom transformers.

A step is compiled from its resolved spec (a JSON-able dict the loader builds
from the route files). Compiled steps are cached by spec.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from esb.cel_engine import Context
from esb.envelope import CloudEvent
from esb.errors import ConfigError, PermanentError
from esb.event_paths import DataPath
from esb.expressions import Expression, ExpressionError, Reads, event_variables
from esb.pools import TRANSFORMER
from esb.routing.conversions import Converter, compile_conversion
from esb.routing.model import Conversion, FieldRule, MapSpec
from esb.routing.names import closest, listing
from esb.routing.schemas import compile_schema, fast_check

TRANSFORMERS_GROUP = "esb.transformers"
ROUTER_SAFE = "esb_router_safe"
SCHEMAS_GROUP = "esb.schemas"

T = TypeVar("T")


class Output:
    """A step's output data, built copy-on-write from its input.

    The input is never changed: only the objects along a path written to are
    copied, once each, and everything else is shared with the input. A step
    thus costs what it changes, not the size of the event (no deep copies);
    the rule that makes this safe is that no step changes its input in place.
    """

    def __init__(self, base: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = dict(base) if base is not None else {}
        self._owned = {id(self.data)}

    def _own(self, parent: dict[str, Any], part: str) -> dict[str, Any]:
        child = parent.get(part)
        if isinstance(child, dict) and id(child) in self._owned:
            return child
        child = dict(child) if isinstance(child, dict) else {}
        self._owned.add(id(child))
        parent[part] = child
        return child

    def set(self, path: str, value: Any) -> None:
        *parents, last = path.split(".")
        data = self.data
        for part in parents:
            data = self._own(data, part)
        data[last] = value

    def drop(self, path: str) -> None:
        *parents, last = path.split(".")
        data = self.data
        for part in parents:
            if not isinstance(data.get(part), dict):
                return
            data = self._own(data, part)
        data.pop(last, None)


def _fresh(value: Any) -> Any:
    """A configured constant as a value of its own, so no output shares it with another."""
    return copy.deepcopy(value) if isinstance(value, dict | list) else value


@dataclass(frozen=True)
class StepSpec:
    """A resolved step: its kind, a label for errors and lineage, its JSON-able config, and the
    pool that runs it (``router``, or a transformer pool)."""

    kind: str
    name: str
    config: dict[str, Any]
    runs_in: str = TRANSFORMER

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "config": self.config}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StepSpec:
        return cls(doc["kind"], doc["name"], doc["config"])


class CompiledStep:
    """A step ready to run: ``apply`` returns the new data, or raises PermanentError.

    ``router_safe``: the router may run it (every declarative kind; a custom
    transformer only when marked with :func:`router_safe`).
    """

    def __init__(
        self, spec: StepSpec, run: Callable[[CloudEvent], Any], router_safe: bool = True
    ) -> None:
        self.spec = spec
        self._run = run
        self.router_safe = router_safe

    def apply(self, event: CloudEvent) -> Any:
        try:
            return self._run(event)
        except PermanentError as exc:
            raise PermanentError(f"{self.spec.label}: {exc}") from None


def _compile_map(spec: MapSpec) -> Callable[[CloudEvent], Any]:
    rules: list[tuple[str, FieldRule, Expression | None]] = []
    for target, raw in spec.fields.items():
        rule = FieldRule(expr=raw) if isinstance(raw, str) else raw
        try:
            expression = Expression.compile(rule.expr) if rule.expr is not None else None
        except ExpressionError as exc:
            raise ConfigError(f"field {target}: {exc}") from None
        rules.append((target, rule, expression))

    needs_context = any(expression is not None for _, _, expression in rules)
    reads = Reads.of(expression for _, _, expression in rules if expression is not None)

    def run(event: CloudEvent) -> Any:
        if spec.keep and not isinstance(event.data, dict):
            raise PermanentError("keep: true needs object data")
        out = Output(event.data if spec.keep else None)
        context = Context(event_variables(event, reads)) if needs_context else Context()
        for target, rule, expression in rules:
            if expression is None:
                value = _fresh(rule.const)
            else:
                has_default = "default" in rule.model_fields_set
                try:
                    value = expression.evaluate(context)
                except ExpressionError as exc:
                    if not has_default:
                        raise PermanentError(f"field {target}: {exc}") from None
                    value = None
                if value is None and has_default:
                    value = _fresh(rule.default)
            out.set(target, value)
        for path in spec.drop:
            out.drop(path)
        return out.data

    return run


def _compile_convert(conversions: list[Conversion]) -> Callable[[CloudEvent], Any]:
    try:
        compiled: list[tuple[Conversion, DataPath, Converter]] = [
            (c, DataPath.parse(c.field), compile_conversion(c)) for c in conversions
        ]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    def run(event: CloudEvent) -> Any:
        if not isinstance(event.data, dict):
            raise PermanentError("convert needs object data")
        out = Output(event.data)
        for conversion, path, convert in compiled:
            value = path.value_in(out.data)
            if value is None:
                if conversion.optional:
                    continue
                raise PermanentError(f"the event has no data.{path}")
            try:
                out.set(conversion.field, convert(value))
            except (ValueError, ArithmeticError) as exc:
                raise PermanentError(f"field {conversion.field}: {exc}") from None
        return out.data

    return run


def _compile_schema(schema: dict[str, Any], name: str) -> Callable[[CloudEvent], Any]:
    validator = compile_schema(schema, name)
    valid = fast_check(schema)

    def run(event: CloudEvent) -> Any:
        if valid is not None and valid(event.data):
            return event.data
        error = next(
            iter(sorted(validator.iter_errors(event.data), key=lambda e: list(e.path))), None
        )
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise PermanentError(f"{where}: {error.message}")
        return event.data

    return run


def entry_point_names(group: str) -> list[str]:
    """The names installed in an entry-point group, without importing them."""
    return [entry.name for entry in entry_points(group=group)]


def load_entry_point(group: str, name: str) -> Any:
    for entry in entry_points(group=group):
        if entry.name == name:
            try:
                return entry.load()
            except ImportError as exc:
                raise ConfigError(f"{group} {name!r} cannot be imported: {exc}") from None
    known = entry_point_names(group)
    raise ConfigError(
        f"unknown {group} entry point {name!r}{closest(name, known)} "
        f"({listing(known, 'none installed')})"
    )


def _compile_model(name: str) -> Callable[[CloudEvent], Any]:
    model = load_entry_point(SCHEMAS_GROUP, name)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigError(f"{SCHEMAS_GROUP} {name!r} is not a pydantic model")

    def run(event: CloudEvent) -> Any:
        try:
            model.model_validate(event.data)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = "/".join(str(p) for p in first["loc"]) or "(root)"
            raise PermanentError(f"{where}: {first['msg']}") from None
        return event.data

    return run


def router_safe(function: T) -> T:
    """Mark a custom transformer cheap and pure enough to run inside the router
    (``runs_in: router``): no I/O, no blocking, the same output for the same event."""
    setattr(function, ROUTER_SAFE, True)
    return function


def _compile_transform(name: str) -> tuple[Callable[[CloudEvent], Any], bool]:
    function = load_entry_point(TRANSFORMERS_GROUP, name)
    if not callable(function):
        raise ConfigError(f"{TRANSFORMERS_GROUP} {name!r} is not callable")

    def run(event: CloudEvent) -> Any:
        try:
            return function(event)
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(f"{type(exc).__name__}: {exc}") from None

    return run, getattr(function, ROUTER_SAFE, False) is True


def compile_step(spec: StepSpec) -> CompiledStep:
    """Compile a resolved step; ConfigError when its config cannot work."""
    return _compile_cached(orjson.dumps(spec.to_json(), option=orjson.OPT_SORT_KEYS))


@lru_cache(maxsize=1024)
def _compile_cached(key: bytes) -> CompiledStep:
    spec = StepSpec.from_json(orjson.loads(key))
    config = spec.config
    if spec.kind == "map":
        run = _compile_map(MapSpec.model_validate(config))
    elif spec.kind == "convert":
        run = _compile_convert([Conversion.model_validate(c) for c in config["conversions"]])
    elif spec.kind == "validate" and "schema" in config:
        run = _compile_schema(config["schema"], spec.name)
    elif spec.kind == "validate":
        run = _compile_model(spec.name)
    elif spec.kind == "transform":
        run, safe = _compile_transform(spec.name)
        return CompiledStep(spec, run, router_safe=safe)
    else:
        raise ConfigError(f"unknown step kind {spec.kind!r}")
    return CompiledStep(spec, run)
