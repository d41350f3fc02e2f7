"""A publish while the publishing channel is not open fails as PublishingDown: the message is
not at fault, so a consumer waits for the channel instead of retrying or parking it."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from esb import BrokerSettings, BrokerUnavailable, CloudEvent, Metrics
from esb.broker import Broker
from esb.errors import PublishingDown
from tests.support.prometheus import metric


async def test_a_publish_without_an_open_publishing_channel_is_publishing_down() -> None:
    metrics = Metrics()
    broker = Broker(BrokerSettings(), "t", metrics)
    assert not broker.publishing.is_set()
    with pytest.raises(PublishingDown) as raised:
        await broker.publish(CloudEvent.new("t.x", "urn:t"))
    assert isinstance(raised.value, BrokerUnavailable)  # sources retry it as before
    exposed = generate_latest(metrics.registry).decode()
    assert metric(exposed, "esb_published_total", service="t", outcome="unconfirmed") == 1
    assert broker.readiness() == "broker: not connected"
