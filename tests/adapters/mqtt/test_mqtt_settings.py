"""MQTT settings and topic templates: mistakes fail at startup, naming the setting."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.mqtt.settings import MqttSinkSettings, MqttSourceSettings
from adapters.mqtt.topics import event_type, render_topic, topic_template
from esb import CloudEvent, ConfigError, EnvelopeError, PermanentError, load_settings

SOURCE = {"host": "mqtt", "client_id": "esb-1", "topics": ["a/#"], "event_type": "a.b"}
SINK = {"host": "mqtt", "topic": "a/{type}"}


def source_error(**change: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(MqttSourceSettings, adapter={**SOURCE, **change})
    return str(caught.value)


def sink_error(**change: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(MqttSinkSettings, adapter={**SINK, **change})
    return str(caught.value)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "HOST": "mqtt.warehouse",
        "PORT": "8883",
        "PROTOCOL": "3.1.1",
        "CLIENT_ID": "esb-scanners",
        "TOPICS": '["warehouse/+/scan", "$share/esb/dock/#"]',
        "EVENT_TYPE": "warehouse.{3}",
        "PASSWORD": "Canary-S3cret",
        "USERNAME": "esb",
    }.items():
        monkeypatch.setenv(f"ESB_ADAPTER__{name}", value)
    adapter = load_settings(MqttSourceSettings).adapter
    assert (adapter.port, adapter.protocol, adapter.topics[1]) == (
        8883,
        "3.1.1",
        "$share/esb/dock/#",
    )
    assert "Canary-S3cret" not in repr(adapter)


def test_a_bad_topic_filter_names_the_setting() -> None:
    assert source_error(topics=["warehouse/#/scan"]) == (
        "setting adapter.topics: Value error, topic filter 'warehouse/#/scan': # must be a "
        "whole, last level (set ESB_ADAPTER__TOPICS or adapter.topics)"
    )
    assert "+ must be a whole level" in source_error(topics=["warehouse/site+/scan"])
    assert "setting adapter.topics: List should have at least 1 item" in source_error(topics=[])


def test_a_bad_template_names_the_setting() -> None:
    assert source_error(event_type="w.{site}").startswith(
        "setting adapter.event_type: Value error, unknown placeholder {site}: use {topic} or {1}"
    )
    assert sink_error(topic="dock/{data}").startswith(
        "setting adapter.topic: Value error, unknown placeholder {data}"
    )
    assert "are for subscriptions, not for publishing" in sink_error(topic="dock/#")


def test_inconsistent_connection_settings_are_refused() -> None:
    assert "password needs a username" in sink_error(password="x")
    assert "tls_ca_file set but tls is false" in sink_error(tls_ca_file="/ca.pem")
    assert "tls_cert_file and tls_key_file go together" in sink_error(
        tls=True, tls_cert_file="/c.pem"
    )
    assert sink_error(qos=3).startswith("setting adapter.qos: Input should be less than or equal")
    assert source_error(client_id=None).startswith("setting adapter.client_id:")
    assert MqttSinkSettings.model_validate({**SINK, "protocol": 5}).protocol == "5"


def test_event_types_come_from_topic_levels() -> None:
    assert event_type("mqtt.{topic}", "warehouse/berlin/scan") == "mqtt.warehouse.berlin.scan"
    assert event_type("shopfloor.{2}.{3}", "plant-1/press-3/temp") == "shopfloor.press-3.temp"
    with pytest.raises(EnvelopeError, match=r"type: \{4\}: topic 'a/b' has 2 levels"):
        event_type("x.{4}", "a/b")


def test_topics_come_from_the_event() -> None:
    event = CloudEvent.new("pick", "urn:shop", {"site": {"code": "BER"}, "n": 7}, subject="SO-1")
    assert (
        render_topic(topic_template("wh/{data.site.code}/{subject}/{data.n}"), event)
        == "wh/BER/SO-1/7"
    )
    with pytest.raises(PermanentError, match=r"topic: the event has no data\.site\.name"):
        render_topic(topic_template("wh/{data.site.name}"), event)
    with pytest.raises(PermanentError, match=r"topic: data\.site is not a single value"):
        render_topic(topic_template("wh/{data.site}"), event)
    for data in ({"site": None}, {"site": {"name": None}}, {"site": ["BER"]}):
        with pytest.raises(PermanentError, match=r"^topic: the event has no data\.site\.name$"):
            render_topic(
                topic_template("wh/{data.site.name}"), event.model_copy(update={"data": data})
            )
    with pytest.raises(PermanentError, match="topic: the event has no subject"):
        render_topic(
            topic_template("wh/{source}/{subject}"), event.model_copy(update={"subject": None})
        )


def test_an_event_type_is_made_of_whole_topic_words_within_255_bytes() -> None:
    """A level holding '.', '*', '#' or a space would not be one word of the type; a type
    over 255 bytes could not travel: both are refused with the reason."""
    for level in ["shop.order.paid", "a*", "#", "a b"]:
        with pytest.raises(EnvelopeError, match="is not one word"):
            event_type("plant.{2}.reading", f"p/{level}/x")
        with pytest.raises(EnvelopeError, match="is not one word"):
            event_type("mqtt.{topic}", f"p/{level}/x")
    with pytest.raises(EnvelopeError, match="over 255 bytes"):
        event_type("mqtt.{topic}", "/".join(["level"] * 50))
    assert event_type("mqtt.{topic}", "/".join(["level"] * 40)).count(".") == 40
