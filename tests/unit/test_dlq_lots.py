"""Which parking lots ``esb dlq`` searches without being told, and where each replays to."""

from __future__ import annotations

from esb.dlq import Lot, fixed_lots
from esb.topology import QueueNames


def test_unrouted_and_its_overflow_replay_to_the_router() -> None:
    names = QueueNames("shop")
    lots = {lot.name: lot for lot in fixed_lots(names)}
    assert lots[names.unrouted] == Lot(names.unrouted, names.router)
    # Each list or show reads an unrouted event once; past the delivery limit the broker
    # moves it here, where dlq must still find it.
    assert lots[names.unrouted + ".dlq"] == Lot(names.unrouted + ".dlq", names.router)
    assert lots[names.router + ".dlq"] == Lot(names.router + ".dlq", names.router)
