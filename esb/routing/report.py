"""``esb routes test``: dry runs of one event, and route tests as data run like a test suite."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from esb.envelope import CloudEvent, event_from_dict, loads_json
from esb.errors import EnvelopeError
from esb.routing.engine import dry_run
from esb.routing.loader import RouteTable
from esb.routing.model import RouteTest

Echo = Callable[[str], None]


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def explain(table: RouteTable, event: CloudEvent, echo: Echo) -> None:
    """Print which routes match ``event``, each step's output, and what each sink receives."""
    runs, errors = dry_run(table, event)
    for route, reason in errors:
        echo(f"route {route}: condition failed on this event (no match): {reason}")
    if not runs:
        echo("no route matches: the router sends this event to esb.unrouted")
        return
    for run in runs:
        echo(f"route {run.route} matches")
        for trace in run.trace:
            echo(f"  {trace.step} -> {_json(trace.data)}")
        if run.error is not None:
            echo(f"  FAILS: {run.error} (the transformer parks it)")
            continue
        if run.delivered is not None:
            for sink in run.sinks:
                echo(f"  sink {sink} receives: {_json(run.delivered.data)}")


@dataclass
class TestResult:
    file: str
    name: str
    failures: list[str]


def completed_event(doc: dict[str, Any], name: str) -> CloudEvent:
    """A structured event with ``specversion``, ``id`` (``test-NAME``) and ``source`` filled in
    when left out: a test holds only what matters to it, in a case or in an ``--event`` file."""
    defaults = {"specversion": "1.0", "id": f"test-{name}", "source": "urn:esb:route-test"}
    return event_from_dict({**defaults, **doc})


def case_event(test: RouteTest) -> CloudEvent:
    return completed_event(test.event, test.name)


def read_event(path: Path) -> CloudEvent:
    """An ``--event`` file's event, completed as a route test's is (named after the file)."""
    doc = loads_json(path.read_bytes(), "event")
    if not isinstance(doc, dict):
        raise EnvelopeError("event", "a structured event must be a JSON object", "invalid_json")
    return completed_event(doc, path.stem)


def run_case(table: RouteTable, test: RouteTest) -> list[str]:
    """The ways ``test`` fails on ``table``; empty when it passes."""
    try:
        event = case_event(test)
    except EnvelopeError as exc:
        return [f"event is not a valid CloudEvent: {exc}"]
    runs, errors = dry_run(table, event)
    del errors  # a condition failing on this event is a documented "no match", not a failure
    failures: list[str] = []
    actual: dict[tuple[str, str], Any] = {}
    errors_expected = {e.route: e.error for e in test.expect if e.error is not None}
    for run in runs:
        if run.error is not None:
            wanted_error = errors_expected.pop(run.route, None)
            if wanted_error is None or wanted_error not in run.error:
                failures.append(f"route {run.route}: {run.error}")
            continue
        for sink in run.sinks:
            actual[(run.route, sink)] = run.delivered.data if run.delivered else None
    for route, wanted_error in errors_expected.items():
        failures.append(f"route {route}: expected an error containing {wanted_error!r}; none")
    expected = {(e.route, e.to): e for e in test.expect if e.to is not None}
    for key in sorted(set(expected) - set(actual)):
        failures.append(f"expected a delivery by route {key[0]} to {key[1]}; none")
    for key in sorted(set(actual) - set(expected)):
        failures.append(f"unexpected delivery by route {key[0]} to {key[1]}: {_json(actual[key])}")
    for key in sorted(set(actual) & set(expected)):
        want = expected[key]
        if "data" in want.model_fields_set and actual[key] != want.data:
            got, wanted = _json(actual[key]), _json(want.data)
            failures.append(f"route {key[0]} to {key[1]}: data {got} != expected {wanted}")
    return failures


def run_tests(table: RouteTable, echo: Echo) -> list[TestResult]:
    """Run every test case of the routes directory, printing one line per case."""
    results = []
    for path, test in table.tests:
        failures = run_case(table, test)
        results.append(TestResult(path.name, test.name, failures))
        echo(f"{'PASS' if not failures else 'FAIL'} {path.name}::{test.name}")
        for failure in failures:
            echo(f"    {failure}")
    passed = sum(1 for r in results if not r.failures)
    echo(f"{passed} passed, {len(results) - passed} failed")
    return results
