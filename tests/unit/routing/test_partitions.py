"""Partitioned sinks in route files: declared with a count and a key, checked at load time,
and their copies addressed to the sink's hash exchange with the key; the share each
replica keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from esb import CloudEvent
from esb.consumer import Consumer
from esb.errors import PermanentError
from esb.rebalance import to_hand_over
from esb.routing.loader import RoutesInvalid, load_routes
from esb.routing.services import next_hop, routing_queues
from esb.topology import PARTITION_KEY_HEADER, QueueNames

ROUTE = """\
routes:
  - name: orders
    from: shop.order.*
    to: [erp, crm]
"""


def load(tmp_path: Path, erp: str) -> Any:
    (tmp_path / "r.yaml").write_text(f"sinks:\n  erp: {erp}\n  crm: {{}}\n{ROUTE}")
    return load_routes(tmp_path)


def faults(tmp_path: Path, erp: str) -> list[str]:
    with pytest.raises(RoutesInvalid) as caught:
        load(tmp_path, erp)
    return [str(f).replace(f"{tmp_path}/", "") for f in caught.value.faults]


def test_a_partitioned_sink_is_n_single_active_consumer_queues_fed_by_its_exchange(
    tmp_path: Path,
) -> None:
    table = load(tmp_path, "{partitions: 3, partition_key: data.order_id}")
    specs = [s for s in routing_queues(table, QueueNames("esb")) if ".sink." in s.name]
    assert [(s.name, s.partition_of, s.single_active_consumer) for s in specs] == [
        ("esb.sink.crm", None, False),
        ("esb.sink.erp.p0", "esb.sink.erp", True),
        ("esb.sink.erp.p1", "esb.sink.erp", True),
        ("esb.sink.erp.p2", "esb.sink.erp", True),
    ]


def test_copies_for_a_partitioned_sink_go_to_its_exchange_with_the_key(tmp_path: Path) -> None:
    route = load(tmp_path, "{partitions: 4, partition_key: data.order_id}").route("orders")
    event = CloudEvent.new("shop.order.paid", "urn:shop", {"order_id": 42}, id="o-1")
    erp, crm = next_hop(route, 1, event, {"slip": "s"}, QueueNames("esb"))
    assert (erp.exchange, erp.routing_key) == ("esb.sink.erp", "")
    assert erp.headers == {"slip": "s", PARTITION_KEY_HEADER: "42"}
    assert (crm.exchange, crm.routing_key, crm.headers) == ("", "esb.sink.crm", {"slip": "s"})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({}, "sink erp: partition_key: the event has no data.order_id"),
        ({"order_id": None}, "sink erp: partition_key: the event has no data.order_id"),
        ({"order_id": {"n": 1}}, "sink erp: partition_key: data.order_id is not a single value"),
    ],
)
def test_an_event_without_its_key_is_refused_before_any_copy_is_sent(
    tmp_path: Path, data: dict[str, Any], reason: str
) -> None:
    route = load(tmp_path, "{partitions: 4, partition_key: data.order_id}").route("orders")
    event = CloudEvent.new("shop.order.paid", "urn:shop", data, id="o-1")
    with pytest.raises(PermanentError, match=f"^{reason}$"):
        next_hop(route, 1, event, {}, QueueNames("esb"))


def test_the_subject_can_be_the_key(tmp_path: Path) -> None:
    route = load(tmp_path, "{partitions: 2, partition_key: subject}").route("orders")
    event = CloudEvent.new("shop.order.paid", "urn:shop", {}, id="o-1", subject="SO-7")
    erp = next_hop(route, 1, event, {}, QueueNames("esb"))[0]
    assert erp.headers == {PARTITION_KEY_HEADER: "SO-7"}


@pytest.mark.parametrize(
    ("erp", "fault"),
    [
        ("{partitions: 0, partition_key: subject}", "Input should be greater than or equal to 1"),
        ("{partitions: 65, partition_key: subject}", "Input should be less than or equal to 64"),
        ("{partitions: 4}", "partitions and partition_key go together: give both or neither"),
        ("{partition_key: subject}", "partitions and partition_key go together"),
        ("{partitions: 4, partition_key: order_id}", "'order_id' is not id, type, source,"),
        ("{partitions: 4, partition_key: data}", "'data' is not id, type, source, subject"),
    ],
)
def test_a_bad_partitioning_fails_the_load_naming_the_cause(
    tmp_path: Path, erp: str, fault: str
) -> None:
    (found,) = faults(tmp_path, erp)
    assert found.startswith("r.yaml:2: sinks.erp"), found
    assert fault in found


class _Held:
    """Stands for a partition's consumer: only its identity matters to the choice."""


def held(*seconds: float) -> list[tuple[Consumer, float]]:
    return [(_Held(), s) for s in seconds]  # type: ignore[misc]


@pytest.mark.parametrize(
    ("seconds", "partitions", "replicas", "hands_over"),
    [
        ((5, 4, 3, 2), 4, 1, False),  # alone: keeps everything
        ((5, 4, 3, 2), 4, 2, True),  # above ceil(4/2) = 2: at once
        ((5, 4, 3), 4, 3, True),  # above ceil(4/3) = 2
        ((1, 1), 4, 3, False),  # at ceil, above floor(4/3) = 1, not yet held long
        ((40, 1), 4, 3, True),  # at ceil, above floor, held past hold_surplus
        ((40, 40), 4, 2, False),  # an even split: nothing to move
        ((40,), 4, 6, False),  # more replicas than partitions: no churn
        ((), 4, 3, False),
    ],
)
def test_a_replica_hands_over_only_above_its_share(
    seconds: tuple[float, ...], partitions: int, replicas: int, hands_over: bool
) -> None:
    active = held(*seconds)
    chosen = to_hand_over(active, partitions, replicas, hold=30)
    assert (chosen is not None) == hands_over
    if chosen is not None:
        assert chosen is max(active, key=lambda pair: pair[1])[0]
