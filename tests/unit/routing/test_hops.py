"""Where a route's steps run: in the router, or in one hop per transformer pool."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from esb import BrokerSettings, CloudEvent
from esb.errors import PermanentError
from esb.routing import steps
from esb.routing.catalog import catalog
from esb.routing.engine import StepFailed, deliver, dry_run, run_hop
from esb.routing.loader import RoutesInvalid, load_routes
from esb.routing.services import destination, next_hop, routing_queues
from esb.topology import QueueNames

SINKS = "sinks:\n  crm: {}\n"

FOUR_STEPS = """\
routes:
  - name: orders
    from: shop.order.*
    runs_in: router
    steps:
      - map: {keep: true, fields: {email: data.customer_email}, drop: [customer_email]}
      - convert: [{field: ordered_at, datetime: {from: "%d/%m/%Y %H:%M:%S"}}]
      - validate: order
        runs_in: transformer
      - transform: strip-nulls
        runs_in: heavy
    to: crm
schemas:
  order: {type: object, required: [email], properties: {email: {type: string}}}
"""


def load(tmp_path: Path, body: str) -> Any:
    (tmp_path / "sinks.yaml").write_text(SINKS)
    (tmp_path / "routes.yaml").write_text(textwrap.dedent(body))
    return load_routes(tmp_path)


def faults(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(RoutesInvalid) as caught:
        load(tmp_path, body)
    return [str(f).replace(f"{tmp_path}/", "") for f in caught.value.faults]


def order(**data: Any) -> CloudEvent:
    return CloudEvent.new("shop.order.paid", "urn:shop", data, id="o-1")


def test_steps_of_one_pool_in_a_row_are_one_hop(tmp_path: Path) -> None:
    route = load(tmp_path, FOUR_STEPS).route("orders")
    assert [s.runs_in for s in route.steps] == ["router", "router", "transformer", "heavy"]
    assert route.router_steps == 2
    assert (route.hop_end(1), route.hop_end(3), route.hop_end(4)) == (3, 4, 5)
    assert route.pools == ["transformer", "heavy"]
    names = QueueNames("esb")
    hops = {p: next_hop(route, p, order(), {}, names) for p in (3, 4, 5)}
    assert {p: [destination(c) for c in copies] for p, copies in hops.items()} == {
        3: ["esb.transform"],
        4: ["esb.transform.heavy"],
        5: ["esb.sink.crm"],
    }
    declared = [spec.name for spec in routing_queues(load_routes(tmp_path), names)]
    assert declared == [
        "esb.router",
        "esb.unrouted",
        "esb.transform.heavy",
        "esb.transform.router",
        "esb.transform",
        "esb.sink.crm",
    ]


def test_a_route_without_runs_in_runs_all_its_steps_in_one_transformer_hop(
    tmp_path: Path,
) -> None:
    route = load(tmp_path, FOUR_STEPS.replace("    runs_in: router\n", "")).route("orders")
    assert route.router_steps == 0
    assert route.hop_end(1) == 4  # map, convert and validate together; strip-nulls in heavy


def test_deliver_runs_hop_by_hop_and_derives_one_event_per_hop(tmp_path: Path) -> None:
    route = load(tmp_path, FOUR_STEPS).route("orders")
    event = order(customer_email="a@x.example", ordered_at="31/12/2026 23:59:58", note=None)
    delivered = deliver(route, event)
    assert delivered.data == {"email": "a@x.example", "ordered_at": "2026-12-31T23:59:58+00:00"}
    assert delivered.correlationid == "o-1"
    assert delivered.id == deliver(route, event).id  # a redelivery derives the same id
    routed = run_hop(route, event, 1, 3, routed=True)
    in_transformer = run_hop(route, routed, 3, 4)
    assert in_transformer.causationid == routed.id
    assert delivered.causationid == in_transformer.id  # three hops: router, transformer, heavy


def test_a_step_failing_mid_hop_hands_on_the_event_as_it_entered_that_step(
    tmp_path: Path,
) -> None:
    table = load(tmp_path, FOUR_STEPS.replace("runs_in: transformer", "runs_in: router"))
    route = table.route("orders")
    event = order(customer_email=None, ordered_at="31/12/2026 23:59:58")
    with pytest.raises(StepFailed) as caught:
        run_hop(route, event, 1, 4, routed=True)
    failed = caught.value
    assert failed.position == 3
    assert isinstance(failed.error, PermanentError)
    assert "email" in str(failed.error)
    assert failed.reached.data == {"email": None, "ordered_at": "2026-12-31T23:59:58+00:00"}
    assert failed.reached.causationid == "o-1"
    with pytest.raises(StepFailed) as first:
        run_hop(route, order(customer_email="a@x.example", ordered_at="-"), 1, 4, routed=True)
    assert first.value.position == 2


def test_dry_run_shows_where_each_step_runs(tmp_path: Path) -> None:
    table = load(tmp_path, FOUR_STEPS)
    event = order(customer_email="a@x.example", ordered_at="31/12/2026 23:59:58")
    [run], _ = dry_run(table, event)
    assert [t.step for t in run.trace] == [
        "map inline (in router)",
        "convert ordered_at (in router)",
        "validate order (in transformer)",
        "transform strip-nulls (in heavy)",
    ]
    delivered = deliver(table.route("orders"), event)
    assert run.delivered is not None
    assert (run.delivered.id, run.delivered.data) == (delivered.id, delivered.data)


def test_the_router_runs_only_a_routes_first_steps(tmp_path: Path) -> None:
    body = FOUR_STEPS.replace("        runs_in: heavy\n", "        runs_in: router\n")
    assert faults(tmp_path, body) == [
        "routes.yaml:11: route orders: step 4 runs in the router after a step in a "
        "transformer; the router runs only a route's first steps"
    ]


def test_reserved_and_malformed_pool_names_are_refused(tmp_path: Path) -> None:
    body = FOUR_STEPS.replace("runs_in: heavy", "runs_in: dlq").replace(
        "runs_in: router", "runs_in: Router"
    )
    found = "\n".join(faults(tmp_path, body))
    assert "routes.0.runs_in: String should match pattern" in found
    assert "routes.0.steps.3.runs_in: Value error, 'dlq' is reserved" in found


def test_a_custom_step_runs_in_the_router_only_when_marked_router_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unmarked(event: CloudEvent) -> Any:
        return event.data

    real = steps.load_entry_point
    monkeypatch.setattr(
        steps,
        "load_entry_point",
        lambda group, name: unmarked if name == "unmarked" else real(group, name),
    )
    steps._compile_cached.cache_clear()
    body = FOUR_STEPS.replace("strip-nulls\n        runs_in: heavy", "unmarked").replace(
        "runs_in: transformer", "runs_in: router"
    )
    assert faults(tmp_path, body) == [
        "routes.yaml:4: route orders: step 4: transform unmarked is not marked router-safe "
        "(esb.routing.steps.router_safe); run it in a transformer"
    ]
    marked = steps.router_safe(unmarked)
    monkeypatch.setattr(steps, "load_entry_point", lambda group, name: marked)
    steps._compile_cached.cache_clear()
    assert load(tmp_path, body).route("orders").router_steps == 4
    steps._compile_cached.cache_clear()


def test_the_placement_example_in_the_routes_docs_loads_as_it_says(tmp_path: Path) -> None:
    text = (Path(__file__).parents[3] / "docs" / "routes.md").read_text()
    block = text.split("```yaml\n# routes/placement.yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "placement.yaml").write_text(block)
    route = load_routes(tmp_path).route("paid-orders")
    assert [s.runs_in for s in route.steps] == ["router", "router", "router", "cleanup"]
    assert route.router_steps == 3
    assert route.pools == ["cleanup"]


def test_the_catalog_says_where_each_step_runs(tmp_path: Path) -> None:
    table = load(tmp_path, FOUR_STEPS)
    document = catalog(table, BrokerSettings(), "1")
    title = document["components"]["messages"]["route.orders"]["title"]
    assert title == (
        "orders output (map inline in router, convert ordered_at in router, "
        "validate order in transformer, transform strip-nulls in heavy)"
    )
