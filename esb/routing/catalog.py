"""``esb catalog``: an AsyncAPI 3.0 document of the whole bus, generated from the route files.

Channels are the event types sources declare (and route patterns no declared
type covers) on the events exchange, the sink queues and the unrouted queue.
Operations say who sends and who receives: sources, the router for each
route, and the sinks. A sink channel's messages carry the payload schema of
the route's last ``validate`` step when it is a JSON Schema.
"""

from __future__ import annotations

import re
from typing import Any

from esb.permissions import vhost_of
from esb.routing.loader import CompiledRoute, RouteTable
from esb.settings import BrokerSettings
from esb.topic import topic_matches
from esb.topology import QueueNames

ASYNCAPI_VERSION = "3.0.0"

_CE_HEADERS = {
    "type": "object",
    "description": "CloudEvents attributes in binary mode (RabbitMQ protocol binding).",
    "required": ["ce-id", "ce-source", "ce-type", "ce-specversion"],
    "properties": {
        "ce-id": {"type": "string"},
        "ce-source": {"type": "string"},
        "ce-type": {"type": "string"},
        "ce-specversion": {"const": "1.0"},
        "ce-time": {"type": "string", "format": "date-time"},
        "ce-subject": {"type": "string"},
        "ce-correlationid": {"type": "string"},
        "ce-causationid": {"type": "string"},
    },
}


def _key(text: str) -> str:
    """AsyncAPI component keys allow letters, digits, '.', '-' and '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text.replace("*", "star").replace("#", "hash"))


def _message(name: str, title: str, payload: dict[str, Any] | None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "title": title,
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/CloudEventHeaders"},
    }
    message["payload"] = (
        payload if payload is not None else {"description": "Not described by a schema."}
    )
    return message


def _queue_channel(queue: str, description: str, vhost: str) -> dict[str, Any]:
    return {
        "address": queue,
        "description": description,
        "messages": {},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": queue,
                    "durable": True,
                    "exclusive": False,
                    "autoDelete": False,
                    "vhost": vhost,
                },
            }
        },
    }


def _output_schema(route: CompiledRoute) -> dict[str, Any] | None:
    """The schema of what a route delivers: known when its last step validates against one."""
    if route.steps and route.steps[-1].kind == "validate" and "schema" in route.steps[-1].config:
        return {"$ref": f"#/components/schemas/{_key(route.steps[-1].name)}"}
    return None


def _event_channel(
    address: str, description: str, key: str, exchange: dict[str, Any]
) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "messages": {"event": {"$ref": f"#/components/messages/{key}"}},
        "bindings": {"amqp": {"is": "routingKey", "exchange": dict(exchange)}},
    }


def catalog(table: RouteTable, broker: BrokerSettings, version: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document for ``table`` deployed with ``broker`` settings."""
    names = QueueNames(broker.prefix)
    vhost = vhost_of(broker.url.get_secret_value())
    exchange = {
        "name": broker.exchange,
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": vhost,
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    event_types = sorted({t for source in table.sources.values() for t in source.emits})
    for event_type in event_types:
        key = f"event.{_key(event_type)}"
        messages[key] = _message(event_type, f"{event_type} event", None)
        about = f"Events of type {event_type} on the {broker.exchange} exchange."
        channels[key] = _event_channel(event_type, about, key, exchange)
    for route in table.routes:
        if not any(topic_matches(route.pattern, t) for t in event_types):
            key = f"event.{_key(route.pattern)}"
            messages.setdefault(
                key, _message(route.pattern, f"events matching {route.pattern}", None)
            )
            about = f"Events whose type matches {route.pattern}; no source declares one."
            channels.setdefault(key, _event_channel(route.pattern, about, key, exchange))

    for name, source in sorted(table.sources.items()):
        for event_type in source.emits:
            key = f"event.{_key(event_type)}"
            operations[f"source.{_key(name)}.send.{_key(event_type)}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{key}"},
                "summary": f"source {name} ({source.adapter or 'any'}) publishes {event_type}",
                "description": source.description,
            }

    for sink_name, sink in sorted(table.sinks.items()):
        key = f"sink.{_key(sink_name)}"
        channels[key] = _queue_channel(
            names.sink(sink_name),
            sink.description or f"Deliveries to the {sink_name} sink.",
            vhost,
        )
        operations[f"sink.{_key(sink_name)}.receive"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": f"sink {sink_name} ({sink.adapter or 'any adapter'}) writes to its target"
            + (
                f", in {sink.partitions} partitions by {sink.partition_key}"
                if sink.partitions is not None
                else ""
            ),
        }
    channels["unrouted"] = _queue_channel(
        names.unrouted, "Events no route matched, kept for inspection.", vhost
    )
    channels["unrouted"]["messages"]["event"] = {"$ref": "#/components/messages/unrouted"}
    messages["unrouted"] = _message("unrouted", "An event no route matched", None)

    for route in table.routes:
        inputs = [f"event.{_key(t)}" for t in event_types if topic_matches(route.pattern, t)]
        inputs = inputs or [f"event.{_key(route.pattern)}"]
        condition = f" when {route.when.source}" if route.when else ""
        for channel_key in inputs:
            operations[f"route.{_key(route.name)}.receive.{channel_key}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel_key}"},
                "summary": f"router: route {route.name}{condition}",
            }
        message_key = f"route.{_key(route.name)}"
        steps = ", ".join(f"{s.label} in {s.runs_in}" for s in route.steps) or "no steps"
        messages[message_key] = _message(
            message_key, f"{route.name} output ({steps})", _output_schema(route)
        )
        for sink_name in route.to:
            sink_key = f"sink.{_key(sink_name)}"
            channels[sink_key]["messages"][_key(route.name)] = {
                "$ref": f"#/components/messages/{message_key}"
            }
            operations[f"route.{_key(route.name)}.send.{_key(sink_name)}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{sink_key}"},
                "messages": [{"$ref": f"#/channels/{sink_key}/messages/{_key(route.name)}"}],
                "summary": f"router and transformers: route {route.name} delivers to {sink_name}",
            }

    schemas: dict[str, Any] = {"CloudEventHeaders": _CE_HEADERS}
    schemas.update({_key(name): schema for name, schema in sorted(table.schemas.items())})
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "esb integration bus",
            "version": version,
            "description": "Every event type, who publishes it, and which routes and sinks "
            "consume it. Generated by esb catalog from the route files.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": _host(broker),
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": f"RabbitMQ; events on the {broker.exchange} topic exchange.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def _host(broker: BrokerSettings) -> str:
    url = broker.redacted_url()
    netloc = url.split("://", 1)[-1].split("/", 1)[0]
    return netloc.rsplit("@", 1)[-1]
