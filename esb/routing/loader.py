"""Load a routes directory: every fault reported with file, line, route and reason.

Loading parses every ``*.yaml`` file, validates it against the models, resolves
step names (maps, schemas, custom transformers), checks sink names and
compiles every expression. Nothing is half-loaded: a directory with any fault
raises :class:`RoutesInvalid` listing all of them. An unknown name is answered
with the valid ones; what loads but is likely a mistake becomes a warning.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from esb.errors import ConfigError
from esb.expressions import Expression, ExpressionError, Reads
from esb.partitions import Partitioning
from esb.pools import ROUTER
from esb.routing.model import (
    STEP_KINDS,
    MapSpec,
    Route,
    RouteFile,
    RouteTest,
    SinkDecl,
    SourceDecl,
    Step,
)
from esb.routing.names import closest, listing
from esb.routing.steps import (
    SCHEMAS_GROUP,
    CompiledStep,
    StepSpec,
    compile_step,
    entry_point_names,
)
from esb.settings import RetrySettings
from esb.topic import topic_matches


@dataclass(frozen=True)
class Fault:
    """One problem in a routes directory."""

    file: Path
    line: int
    reason: str
    route: str | None = None
    warning: bool = False

    def __str__(self) -> str:
        kind = " warning:" if self.warning else ""
        where = f" route {self.route}:" if self.route else ""
        return f"{self.file}:{self.line}:{kind}{where} {self.reason}"


class RoutesInvalid(ConfigError):
    """A routes directory that cannot be loaded; ``faults`` lists every problem."""

    def __init__(self, faults: list[Fault]) -> None:
        self.faults = faults
        super().__init__("\n".join(str(fault) for fault in faults))


@dataclass
class CompiledRoute:
    """A loaded route: its pattern, compiled condition, resolved steps and sinks."""

    name: str
    pattern: str
    when: Expression | None
    steps: list[StepSpec]
    to: list[str]
    file: Path
    line: int
    retry: RetrySettings | None = None
    compiled: list[CompiledStep] = field(default_factory=list)
    #: The sinks of ``to`` that are partitioned, and how.
    partitioned: dict[str, Partitioning] = field(default_factory=dict)

    def matches_type(self, event_type: str) -> bool:
        return topic_matches(self.pattern, event_type)

    def hop_end(self, position: int) -> int:
        """The step after the hop that starts at ``position``: the steps that follow it in
        the same pool run with it, in one hop."""
        pool = self.steps[position - 1].runs_in
        end = position
        while end < len(self.steps) and self.steps[end].runs_in == pool:
            end += 1
        return end + 1

    @property
    def router_steps(self) -> int:
        """How many of the first steps the router runs (those in ``runs_in: router``)."""
        return self.hop_end(1) - 1 if self.steps and self.steps[0].runs_in == ROUTER else 0

    @property
    def pools(self) -> list[str]:
        """The transformer pools this route's steps run in, in order (``router`` excluded)."""
        return list(dict.fromkeys(s.runs_in for s in self.steps if s.runs_in != ROUTER))

    @cached_property
    def version(self) -> str:
        """A fingerprint of the route's shape: its steps' kinds and names, and its sinks.

        A message routed before steps were added, removed or reordered names
        a version no longer loaded and is parked, not run at the wrong step; a
        fix inside a step keeps the version, so a replayed message gets the fix.
        """
        shape = orjson.dumps([[[s.kind, s.name] for s in self.steps], self.to])
        return hashlib.sha256(shape).hexdigest()[:12]


#: Event types whose candidate routes a table remembers.
TYPES_REMEMBERED = 4096


@dataclass(frozen=True)
class Candidates:
    """The routes an event type may take, and what their conditions read of an event."""

    routes: list[CompiledRoute]
    reads: Reads


@dataclass
class RouteTable:
    """Everything a routes directory declares, validated and compiled."""

    routes: list[CompiledRoute] = field(default_factory=list)
    sources: dict[str, SourceDecl] = field(default_factory=dict)
    sinks: dict[str, SinkDecl] = field(default_factory=dict)
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    tests: list[tuple[Path, RouteTest]] = field(default_factory=list)
    #: What loads but is likely a mistake; ``esb routes validate`` prints them.
    warnings: list[Fault] = field(default_factory=list)

    _by_type: dict[str, Candidates] = field(default_factory=dict, repr=False, compare=False)

    def candidates(self, event_type: str) -> Candidates:
        """The routes whose pattern takes ``event_type``, and what their conditions read:
        worked out once per type (types are sender-chosen, so the memory of them is bounded)."""
        found = self._by_type.get(event_type)
        if found is None:
            if len(self._by_type) >= TYPES_REMEMBERED:
                self._by_type.clear()
            routes = [route for route in self.routes if route.matches_type(event_type)]
            reads = Reads.of(route.when for route in routes if route.when is not None)
            found = self._by_type[event_type] = Candidates(routes, reads)
        return found

    def route(self, name: str) -> CompiledRoute:
        return next(r for r in self.routes if r.name == name)

    def find(self, name: str) -> CompiledRoute | None:
        return next((r for r in self.routes if r.name == name), None)


class _LineLoader(yaml.SafeLoader):
    """Safe YAML that keeps each node, so errors can point at a line."""


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    """The line of the deepest node along a pydantic error location."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == part), None)
            if child is None:
                break
            node = child
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


@dataclass
class _Parsed:
    path: Path
    node: yaml.Node
    model: RouteFile


def _parse(path: Path, faults: list[Fault]) -> _Parsed | None:
    try:
        text = path.read_text()
    except OSError as exc:
        faults.append(Fault(path, 1, f"cannot read: {exc.strerror}"))
        return None
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        faults.append(Fault(path, line, f"not valid YAML: {getattr(exc, 'problem', exc)}"))
        return None
    if node is None:
        return None
    if not isinstance(doc, dict):
        faults.append(
            Fault(path, 1, "a route file is a mapping with sinks, maps, schemas, routes, tests")
        )
        return None
    try:
        model = RouteFile.model_validate(doc)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            loc = tuple(error["loc"])
            route = _route_name(doc, loc)
            faults.append(Fault(path, _line_of(node, loc), _pydantic_reason(error, loc), route))
        return None
    return _Parsed(path, node, model)


def _pydantic_reason(error: ErrorDetails, loc: tuple[int | str, ...]) -> str:
    """A model error in route-file terms; a misspelt step kind names the kinds."""
    if error["type"] == "extra_forbidden" and len(loc) == 5 and loc[0:3:2] == ("routes", "steps"):
        position, key = loc[3], str(loc[4])
        return (
            f"step {int(position) + 1}: unknown step key {key!r}"
            f"{closest(key, [*STEP_KINDS, 'runs_in'])} "
            f"(a step is one of {', '.join(STEP_KINDS)}, with an optional runs_in)"
        )
    return f"{'.'.join(str(p) for p in loc)}: {error['msg']}"


def _route_name(doc: dict[str, Any], loc: tuple[int | str, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
        routes = doc.get("routes")
        if isinstance(routes, list) and loc[1] < len(routes) and isinstance(routes[loc[1]], dict):
            name = routes[loc[1]].get("name")
            return str(name) if name is not None else None
    return None


def load_routes(directory: Path) -> RouteTable:
    """Load and check every ``*.yaml`` in ``directory``; :class:`RoutesInvalid` lists faults."""
    if not directory.is_dir():
        raise ConfigError(f"routes directory {directory} does not exist")
    faults: list[Fault] = []
    parsed = [p for path in sorted(directory.glob("*.yaml")) if (p := _parse(path, faults))]
    if not parsed and not faults:
        raise ConfigError(f"no *.yaml route files in {directory}")

    table = RouteTable()
    maps: dict[str, MapSpec] = {}
    schemas = table.schemas
    sections = (
        ("sources", table.sources),
        ("sinks", table.sinks),
        ("maps", maps),
        ("schemas", schemas),
    )
    for p in parsed:
        for section, target in sections:
            for name, value in getattr(p.model, section).items():
                if name in target:
                    faults.append(
                        Fault(
                            p.path,
                            _line_of(p.node, (section, name)),
                            f"duplicate {section[:-1]} {name!r}",
                        )
                    )
                target[name] = value

    seen: dict[str, Path] = {}
    for p in parsed:
        for index, route in enumerate(p.model.routes):
            line = _line_of(p.node, ("routes", index))
            if route.name in seen:
                faults.append(
                    Fault(
                        p.path,
                        line,
                        f"duplicate route name (first in {seen[route.name]})",
                        route.name,
                    )
                )
                continue
            seen[route.name] = p.path
            compiled = _compile_route(route, p, index, table.sinks, maps, schemas, faults)
            if compiled is not None:
                table.routes.append(compiled)
        table.tests.extend((p.path, test) for test in p.model.tests)
    if faults:
        raise RoutesInvalid(faults)
    table.warnings = _warnings(parsed, table)
    return table


def _warnings(parsed: list[_Parsed], table: RouteTable) -> list[Fault]:
    """What loads but is likely a mistake: a ``from:`` that no declared source emits (when
    sources declare what they emit), a route test expecting a route no file declares.

    Warnings, not faults: the router loads with this same code, and neither
    changes what it does (a test case is never run there; a source may be
    undeclared), so neither should stop a deployment. ``esb routes test``
    fails a case that expects an unknown route anyway.
    """
    warnings: list[Fault] = []
    routes = [route.name for route in table.routes]
    emitted = sorted({event_type for s in table.sources.values() for event_type in s.emits})
    for p in parsed:
        for index, route in enumerate(p.model.routes):
            if emitted and not any(topic_matches(route.from_, t) for t in emitted):
                reason = (
                    f"from: no declared source emits a type {route.from_!r} matches"
                    f"{closest(route.from_, emitted)} (emitted: {listing(emitted)})"
                )
                line = _line_of(p.node, ("routes", index, "from"))
                warnings.append(Fault(p.path, line, reason, route.name, warning=True))
        for index, test in enumerate(p.model.tests):
            for position, expected in enumerate(test.expect):
                if expected.route not in routes:
                    reason = (
                        f"test {test.name!r} expects unknown route {expected.route!r}"
                        f"{closest(expected.route, routes)} (routes: {listing(routes)})"
                    )
                    line = _line_of(p.node, ("tests", index, "expect", position, "route"))
                    warnings.append(Fault(p.path, line, reason, warning=True))
    return warnings


def _compile_route(
    route: Route,
    p: _Parsed,
    index: int,
    sinks: dict[str, SinkDecl],
    maps: dict[str, MapSpec],
    schemas: dict[str, dict[str, Any]],
    faults: list[Fault],
) -> CompiledRoute | None:
    before = len(faults)

    def fault(loc: tuple[int | str, ...], reason: str) -> None:
        faults.append(Fault(p.path, _line_of(p.node, ("routes", index, *loc)), reason, route.name))

    when = None
    if route.when is not None:
        try:
            when = Expression.compile(route.when)
        except ExpressionError as exc:
            fault(("when",), f"when: {exc}")
    for position, sink in enumerate(route.to):
        if sink not in sinks:
            fault(
                ("to", position) if len(route.to) > 1 else ("to",),
                f"unknown sink {sink!r}{closest(sink, sinks)} "
                f"(sinks: {listing(sinks, 'none declared')})",
            )
    steps = []
    compiled = []
    after_transformer = False
    for position, step in enumerate(route.steps):
        pool = step.runs_in or route.runs_in
        loc = ("steps", position, "runs_in") if step.runs_in else ("runs_in",)
        try:
            spec = replace(_resolve_step(step, maps, schemas), runs_in=pool)
            runner = compile_step(spec)
        except ConfigError as exc:
            fault(("steps", position), f"step {position + 1}: {exc}")
            continue
        if pool == ROUTER and after_transformer:
            fault(
                loc,
                f"step {position + 1} runs in the router after a step in a transformer; "
                "the router runs only a route's first steps",
            )
        elif pool == ROUTER and not runner.router_safe:
            fault(
                loc,
                f"step {position + 1}: {spec.label} is not marked router-safe "
                "(esb.routing.steps.router_safe); run it in a transformer",
            )
        after_transformer = after_transformer or pool != ROUTER
        steps.append(spec)
        compiled.append(runner)
    if len(faults) > before:
        return None
    return CompiledRoute(
        route.name,
        route.from_,
        when,
        steps,
        route.to,
        p.path,
        _line_of(p.node, ("routes", index)),
        route.retry,
        compiled,
        {
            sink: partitioning
            for sink in route.to
            if (partitioning := sinks[sink].partitioning(sink)) is not None
        },
    )


def _resolve_step(
    step: Step, maps: dict[str, MapSpec], schemas: dict[str, dict[str, Any]]
) -> StepSpec:
    if step.map is not None:
        if isinstance(step.map, str):
            if step.map not in maps:
                raise ConfigError(
                    f"unknown map {step.map!r}{closest(step.map, maps)} (maps: {listing(maps)})"
                )
            return StepSpec(
                "map", step.map, maps[step.map].model_dump(by_alias=True, exclude_unset=True)
            )
        return StepSpec("map", "inline", step.map.model_dump(by_alias=True, exclude_unset=True))
    if step.convert is not None:
        conversions = [c.model_dump(by_alias=True, exclude_none=True) for c in step.convert]
        return StepSpec(
            "convert", ",".join(c.field for c in step.convert), {"conversions": conversions}
        )
    if step.validate_ is not None:
        name = step.validate_
        if name in schemas:
            return StepSpec("validate", name, {"schema": schemas[name]})
        models = entry_point_names(SCHEMAS_GROUP)
        if name not in models:
            raise ConfigError(
                f"unknown schema {name!r}{closest(name, [*schemas, *models])} "
                f"(schemas: {listing(schemas)}; "
                f"{SCHEMAS_GROUP} models: {listing(models, 'none installed')})"
            )
        return StepSpec("validate", name, {})
    if step.transform is None:
        raise ConfigError("a step needs a kind")
    return StepSpec("transform", step.transform, {})
