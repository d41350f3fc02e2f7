"""esb.testing.FlowHarness runs routes, transformers and sinks in memory, with faults injected."""

from __future__ import annotations

from pathlib import Path

from esb import CloudEvent
from esb.routing.loader import load_routes
from esb.testing import FlowHarness, RecordingSink

ROUTES = Path(__file__).parents[1] / "routes"


def harness(**sinks: RecordingSink) -> FlowHarness:
    return FlowHarness(load_routes(ROUTES), {k.replace("_", "-"): v for k, v in sinks.items()})


async def test_three_routes_reach_three_sinks_once_despite_failures_and_duplicates() -> None:
    a, b, c = (
        RecordingSink(transient_failures=2),
        RecordingSink(),
        RecordingSink(transient_failures=1),
    )
    flow = harness(fan_a=a, fan_b=b, fan_c=c)
    event = CloudEvent.new("fan.order.created", "urn:shop", {"total": 5})
    await flow.publish(event)
    assert await flow.run(duplicates=True) == {"fan-a": 1, "fan-b": 1, "fan-c": 1}
    for sink in (a, b, c):
        [written] = sink.written
        assert written.data == {"total": 5}
        assert written.correlationid == event.id
    assert (a.attempts[a.ids[0]], b.attempts[b.ids[0]]) == (4, 2)


async def test_a_step_failure_and_an_unmatched_event_are_kept_for_inspection() -> None:
    flow = harness(map_sink=RecordingSink())
    await flow.publish(CloudEvent.new("map.strict", "urn:t", {"other": 1}))
    await flow.publish(CloudEvent.new("nobody.listens", "urn:t", {}))
    await flow.run()
    [failure] = flow.step_failures
    assert "field id: no such field" in str(failure.error)
    assert [e.type for e in flow.unrouted] == ["nobody.listens"]


async def test_a_sink_refusing_an_event_parks_it_after_no_retries() -> None:
    sink = RecordingSink(permanent_if=lambda e: e.data.get("client_id") == "C-bad")
    flow = harness(map_sink=sink)
    await flow.publish(
        CloudEvent.new("map.customer", "urn:crm", {"customer_id": "C-bad", "name": "x"})
    )
    await flow.publish(
        CloudEvent.new("map.customer", "urn:crm", {"customer_id": "C-ok", "name": "y"})
    )
    await flow.run()
    assert [e.data["client_id"] for e in sink.written] == ["C-ok"]
    assert [(p.reason, p.attempts) for p in flow.parked("map-sink")] == [("permanent", 1)]
