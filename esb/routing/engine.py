"""Matching events to routes and running a route's steps, without a broker.

The router service and ``esb routes test`` both use this, so a dry run shows
exactly what the deployed router and transformers do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from esb.envelope import CloudEvent
from esb.errors import PermanentError
from esb.routing.expressions import ExpressionError, event_context
from esb.routing.lineage import derive
from esb.routing.loader import CompiledRoute, RouteTable
from esb.routing.steps import StepSpec, compile_step

log = logging.getLogger(__name__)


@dataclass
class Matches:
    """The routes an event matched, and the conditions that failed to evaluate on it."""

    routes: list[CompiledRoute] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)


def match(table: RouteTable, event: CloudEvent) -> Matches:
    """Routes whose pattern and condition accept ``event``.

    A condition that fails on this event (a missing field, a type mismatch)
    does not match; the failure is returned so it can be logged and counted.
    """
    result = Matches()
    context = None
    for route in table.routes:
        if not route.matches_type(event.type):
            continue
        if route.when is not None:
            if context is None:
                context = event_context(event)
            try:
                accepted = route.when.evaluate(context)
            except ExpressionError as exc:
                result.errors.append((route.name, str(exc)))
                continue
            if accepted is not True:
                continue
        result.routes.append(route)
    return result


def route_copy(route: CompiledRoute, event: CloudEvent) -> CloudEvent:
    """The copy of ``event`` the router sends down ``route``."""
    return derive(event, f"route {route.name}", event.data)


def apply_step(spec: StepSpec, event: CloudEvent, position: int) -> CloudEvent:
    """Run one step; the output is a derived event (new id, causation = input)."""
    data = compile_step(spec).apply(event)
    return derive(event, f"step {position} {spec.label}", data)


@dataclass
class StepTrace:
    step: str
    data: Any


@dataclass
class DryRun:
    """What one route does to one event: each step's output and what the sinks receive."""

    route: str
    sinks: list[str]
    trace: list[StepTrace] = field(default_factory=list)
    delivered: CloudEvent | None = None
    error: str | None = None


def dry_run(table: RouteTable, event: CloudEvent) -> tuple[list[DryRun], list[tuple[str, str]]]:
    """Every matching route run to the end, in memory; plus condition errors."""
    matches = match(table, event)
    runs = []
    for route in matches.routes:
        run = DryRun(route.name, list(route.to))
        current = route_copy(route, event)
        try:
            for position, spec in enumerate(route.steps, start=1):
                current = apply_step(spec, current, position)
                run.trace.append(StepTrace(spec.label, current.data))
            run.delivered = current
        except PermanentError as exc:
            run.error = str(exc)
        runs.append(run)
    return runs, matches.errors
