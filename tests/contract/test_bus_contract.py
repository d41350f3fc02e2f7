"""What every bus must do, proven on the in-memory bus and on RabbitMQ alike."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from esb import CloudEvent, UnroutableError
from esb.testing import RecordingSink
from tests.contract.buses import RETRY, ContractBus, InMemory, OnRabbitMQ


@pytest.fixture(params=["memory", "rabbitmq"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[ContractBus]:
    if request.param == "memory":
        implementation: ContractBus = InMemory()
    else:
        rabbit = OnRabbitMQ(request.getfixturevalue("amqp_url"))
        await rabbit.connect()
        implementation = rabbit
    yield implementation
    await implementation.close()


def order(n: int, **data: object) -> CloudEvent:
    return CloudEvent.new("shop.order.created", "urn:shop", {"n": n, **data}, id=f"order-{n}")


async def test_events_reach_only_the_queues_bound_to_matching_patterns(bus: ContractBus) -> None:
    await bus.bind("orders", "shop.order.*")
    await bus.bind("crm", "crm.#")
    await bus.emit(order(1))
    orders, crm = RecordingSink(), RecordingSink()
    await bus.deliver("orders", orders)
    await bus.deliver("crm", crm)
    assert (orders.ids, crm.ids) == (["order-1"], [])


async def test_an_event_no_queue_takes_is_an_error(bus: ContractBus) -> None:
    await bus.bind("crm", "crm.#")
    with pytest.raises(UnroutableError):
        await bus.emit(order(1))


async def test_transient_failures_are_redelivered_until_written(bus: ContractBus) -> None:
    await bus.bind("orders", "shop.#")
    for n in range(3):
        await bus.emit(order(n))
    sink = RecordingSink(transient_failures=2)
    await bus.deliver("orders", sink)
    assert sorted(sink.ids) == ["order-0", "order-1", "order-2"]
    assert dict(sink.attempts) == {"order-0": 3, "order-1": 3, "order-2": 3}
    assert await bus.parked("orders") == []


async def test_a_message_waiting_to_retry_does_not_block_the_ones_behind_it(
    bus: ContractBus,
) -> None:
    await bus.bind("orders", "shop.#")
    for n in range(2):
        await bus.emit(order(n))
    attempts_log: list[str] = []

    class Logging(RecordingSink):
        async def write(self, event: CloudEvent) -> None:
            attempts_log.append(event.id)
            await super().write(event)

    await bus.deliver("orders", Logging(transient_failures=1))
    assert attempts_log == ["order-0", "order-1", "order-0", "order-1"]


async def test_a_permanent_failure_is_parked_at_once_and_the_rest_flow(bus: ContractBus) -> None:
    await bus.bind("orders", "shop.#")
    for n in range(3):
        await bus.emit(order(n, bad=n == 1))
    sink = RecordingSink(permanent_if=lambda event: bool(event.data["bad"]))
    await bus.deliver("orders", sink)
    assert sink.ids == ["order-0", "order-2"]
    assert sink.attempts["order-1"] == 1
    assert await bus.parked("orders") == [("permanent", "order-1")]


async def test_a_message_that_always_fails_is_parked_when_out_of_retries(
    bus: ContractBus,
) -> None:
    await bus.bind("orders", "shop.#")
    await bus.emit(order(1))
    await bus.emit(order(2))
    sink = RecordingSink(transient_failures=100)
    await bus.deliver("orders", sink)
    assert sink.ids == []
    attempts = RETRY.max_retries + 1
    assert dict(sink.attempts) == {"order-1": attempts, "order-2": attempts}
    assert sorted(await bus.parked("orders")) == [
        ("retries_exhausted", "order-1"),
        ("retries_exhausted", "order-2"),
    ]


async def test_one_consumer_writes_in_publish_order(bus: ContractBus) -> None:
    await bus.bind("orders", "shop.#")
    for n in range(20):
        await bus.emit(order(n))
    sink = RecordingSink()
    await bus.deliver("orders", sink)
    assert sink.ids == [f"order-{n}" for n in range(20)]
