"""Route tests as data: the suites pass as dry runs, and a wrong expectation is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from esb import CloudEvent
from esb.cli import main
from esb.routing.engine import dry_run, match
from esb.routing.loader import load_routes
from esb.routing.model import Expectation, RouteTest
from esb.routing.report import run_case

REPO = Path(__file__).parents[3]


@pytest.mark.parametrize("directory", ["routes", "tests/routes"])
def test_every_route_case_passes_as_a_dry_run(directory: str) -> None:
    table = load_routes(REPO / directory)
    failures = {case.name: run_case(table, case) for _, case in table.tests}
    assert {name: f for name, f in failures.items() if f} == {}


def test_a_wrong_expectation_is_reported_with_both_payloads() -> None:
    table = load_routes(REPO / "tests/routes")
    case = RouteTest(
        name="wrong",
        event={"type": "map.customer", "data": {"customer_id": "C-1", "name": "Ada"}},
        expect=[Expectation(route="m-rename", to="map-sink", data={"client_id": "C-2"})],
    )
    assert run_case(table, case) == [
        'route m-rename to map-sink: data {"client_id":"C-1","name":"Ada"} '
        '!= expected {"client_id":"C-2"}'
    ]


def test_missing_and_unexpected_deliveries_are_reported() -> None:
    table = load_routes(REPO / "tests/routes")
    case = RouteTest(
        name="wrong",
        event={"type": "cond.order", "data": {"status": "paid"}},
        expect=[Expectation(route="c-range", to="cond-sink")],
    )
    assert run_case(table, case) == [
        "expected a delivery by route c-range to cond-sink; none",
        'unexpected delivery by route c-eq to cond-sink: {"status":"paid"}',
    ]


def test_a_condition_over_a_missing_field_is_no_match_and_is_reported() -> None:
    table = load_routes(REPO / "tests/routes")
    event = CloudEvent.new("cond.order", "urn:t", {"status": "paid"})
    result = match(table, event)
    assert [r.name for r in result.routes] == ["c-eq"]
    assert ("c-range", "no such field 'total'") in result.errors


def test_each_step_output_keeps_lineage() -> None:
    table = load_routes(REPO / "routes")
    event = CloudEvent.new(
        "crm.deal.won",
        "urn:crm",
        {
            "deal_id": "D-1",
            "title": "T",
            "customer_id": "C-9",
            "closed_on": "01.02.2026",
            "amount": 5,
        },
        correlationid="corr-1",
    )
    runs, _ = dry_run(table, event)
    accounting = next(r for r in runs if r.route == "won-deals-to-accounting")
    assert accounting.delivered is not None
    assert accounting.delivered.correlationid == "corr-1"
    assert accounting.delivered.id != event.id
    assert accounting.delivered.causationid not in (None, event.id)
    again, _ = dry_run(table, event)
    assert (
        next(r for r in again if r.route == accounting.route).delivered.id
        == accounting.delivered.id
    )


def test_cli_routes_test_reports_like_a_test_runner() -> None:
    result = CliRunner().invoke(main, ["routes", "test", str(REPO / "routes")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "8 passed, 0 failed"


def test_cli_routes_test_fails_on_a_failing_case(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "sinks: {crm: {}}\nroutes:\n  - {name: a, from: x.#, to: crm}\n"
        "tests:\n  - name: wrong sink\n    event: {type: x.y, data: {}}\n"
        "    expect: [{route: a, to: erp}]\n"
    )
    result = CliRunner().invoke(main, ["routes", "test", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "FAIL r.yaml::wrong sink",
        "    expected a delivery by route a to erp; none",
        "    unexpected delivery by route a to crm: {}",
        "0 passed, 1 failed",
    ]


def test_cli_dry_run_of_one_event_shows_steps_and_sink_payloads(tmp_path: Path) -> None:
    event = tmp_path / "deal.json"
    event.write_bytes(
        CloudEvent.new(
            "crm.deal.won",
            "urn:crm",
            {
                "deal_id": "D-1",
                "title": "T",
                "customer_id": "C-9",
                "closed_on": "01.02.2026",
                "amount": 5,
                "contact_email": "x@example.com",
            },
        ).to_structured()
    )
    result = CliRunner().invoke(
        main, ["routes", "test", str(REPO / "routes"), "--event", str(event)]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "route won-deals-to-accounting matches"
    assert lines[2].startswith(
        '  convert invoice_date,due_date,amount (in transformer) -> {"amount":"5.00"'
    )
    assert lines[3] == (
        '  sink accounting-db receives: {"amount":"5.00","client_id":"C-9","currency":"EUR",'
        '"deal_id":"D-1","description":"Deal D-1: T","due_date":null,"invoice_date":"2026-02-01"}'
    )
    assert "route won-deals-to-marketing matches" in lines


def test_cli_validate_prints_every_fault_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("routes:\n  - {name: a, from: x.#, to: crm}\n")
    result = CliRunner().invoke(main, ["routes", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert (
        result.output
        == f"{tmp_path}/r.yaml:2: route a: unknown sink 'crm' (sinks: none declared)\n"
    )


def test_cli_graph_in_mermaid_and_dot() -> None:
    mermaid = CliRunner().invoke(main, ["routes", "graph", str(REPO / "routes")])
    assert mermaid.exit_code == 0
    assert mermaid.output.startswith("flowchart LR\n")
    assert '  k_shipping_api[("shipping-api")]' in mermaid.output
    dot = CliRunner().invoke(main, ["routes", "graph", str(REPO / "routes"), "--format", "dot"])
    assert dot.exit_code == 0
    assert dot.output.startswith("digraph esb {")
    assert "r_reserved_orders_to_shipping -> s_reserved_orders_to_shipping_1;" in dot.output


def test_cli_validate_prints_warnings_and_still_passes(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "sinks: {crm: {}}\nroutes:\n  - {name: a, from: x.#, to: crm}\n"
        "tests:\n  - name: t\n    event: {type: x.y, data: {}}\n    expect: [{route: b, to: crm}]\n"
    )
    result = CliRunner().invoke(main, ["routes", "validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{tmp_path}/r.yaml:7: warning: test 't' expects unknown route 'b' (routes: a)",
        f"{tmp_path}: 1 routes, 1 sinks, 1 tests: valid, 1 warnings",
    ]


def test_cli_dry_run_accepts_an_event_as_route_tests_do(tmp_path: Path) -> None:
    """No id, specversion or source: filled in as for a route test's event."""
    event = tmp_path / "order.json"
    event.write_text('{"type": "shop.order.created", "data": {"status": "open"}}')
    result = CliRunner().invoke(
        main, ["routes", "test", str(REPO / "routes"), "--event", str(event)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "route order-audit matches",
        '  sink audit-log receives: {"status":"open"}',
    ]


def test_cli_dry_run_of_an_invalid_event_is_one_line_naming_the_file(tmp_path: Path) -> None:
    event = tmp_path / "order.json"
    event.write_text('{"type": "shop.order.created", "specversion": "0.3"}')
    result = CliRunner().invoke(
        main, ["routes", "test", str(REPO / "routes"), "--event", str(event)]
    )
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {event}: not a valid CloudEvent: specversion")
    assert len(result.output.splitlines()) == 1
