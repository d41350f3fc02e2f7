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
from esb.expressions import ExpressionError, event_context
from esb.routing.lineage import derive
from esb.routing.loader import CompiledRoute, RouteTable

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
    candidates = table.candidates(event.type)
    for route in candidates.routes:
        if route.when is not None:
            if context is None:
                context = event_context(event, candidates.reads)
            try:
                accepted = route.when.evaluate(context)
            except ExpressionError as exc:
                result.errors.append((route.name, str(exc)))
                continue
            if accepted is not True:
                continue
        result.routes.append(route)
    return result


class StepFailed(Exception):
    """Step ``position`` of a hop failed; ``reached`` is the event as it entered that step
    (derived when earlier steps of the hop ran), so the step can be retried, parked and
    replayed on its own, resuming where it failed."""

    def __init__(self, position: int, reached: CloudEvent, error: Exception) -> None:
        super().__init__(str(error))
        self.position = position
        self.reached = reached
        self.error = error


def route_copy(route: CompiledRoute, event: CloudEvent) -> CloudEvent:
    """The copy of ``event`` the router sends down ``route`` when it runs none of its steps."""
    return derive(event, f"route {route.name}", event.data)


@dataclass
class StepTrace:
    step: str
    data: Any


def run_hop(
    route: CompiledRoute,
    event: CloudEvent,
    position: int,
    end: int,
    *,
    routed: bool = False,
    trace: list[StepTrace] | None = None,
) -> CloudEvent:
    """Run steps ``position`` to ``end - 1`` of ``route`` on ``event``, as one hop.

    The steps pass data along; one output event is derived at the end (a new
    id, causation = the input) named by the steps it ran, so a redelivery
    derives the same id. ``routed``: the router runs them on the event it
    routes. A failing step raises :class:`StepFailed`.
    """
    hop = f"route {route.name}: " if routed else ""
    current = event
    for at in range(position, end):
        runner = route.compiled[at - 1]
        try:
            data = runner.apply(current)
        except Exception as exc:
            if at > position:
                reached = derive(event, f"{hop}steps {position}-{at - 1}", current.data)
            else:
                reached = route_copy(route, event) if routed else event
            raise StepFailed(at, reached, exc) from exc
        current = current.model_copy(update={"data": data})
        if trace is not None:
            trace.append(StepTrace(f"{runner.spec.label} (in {route.steps[at - 1].runs_in})", data))
    return derive(event, f"{hop}steps {position}-{end - 1}", current.data)


@dataclass
class DryRun:
    """What one route does to one event: each step's output and what the sinks receive."""

    route: str
    sinks: list[str]
    trace: list[StepTrace] = field(default_factory=list)
    delivered: CloudEvent | None = None
    error: str | None = None


def deliver(
    route: CompiledRoute, event: CloudEvent, trace: list[StepTrace] | None = None
) -> CloudEvent:
    """What ``route``'s sinks receive for ``event``, hop by hop as the deployed router and
    transformers run it; :class:`StepFailed` when a step fails."""
    position = route.router_steps + 1
    if position > 1:
        current = run_hop(route, event, 1, position, routed=True, trace=trace)
    else:
        current = route_copy(route, event)
    while position <= len(route.steps):
        end = route.hop_end(position)
        current = run_hop(route, current, position, end, trace=trace)
        position = end
    return current


def dry_run(table: RouteTable, event: CloudEvent) -> tuple[list[DryRun], list[tuple[str, str]]]:
    """Every matching route run to the end, in memory; plus condition errors."""
    matches = match(table, event)
    runs = []
    for route in matches.routes:
        run = DryRun(route.name, list(route.to))
        try:
            run.delivered = deliver(route, event, run.trace)
        except StepFailed as failed:
            if not isinstance(failed.error, PermanentError):
                raise failed.error from None
            run.error = str(failed.error)
        runs.append(run)
    return runs, matches.errors
