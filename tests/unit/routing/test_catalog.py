"""esb catalog writes an AsyncAPI 3.0 document that the official schema accepts."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft7Validator

from esb import BrokerSettings, __version__
from esb.cli import main
from esb.routing.catalog import catalog
from esb.routing.loader import load_routes

REPO = Path(__file__).parents[3]
SCHEMA = REPO / "tests/data/asyncapi-3.0.0.json"
SCHEMA_SHA256 = "abe96881dbfaad495ccbb6bd8d3fb43ca18a13b9d7564849ccb66f39d5e5b20f"


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    """The official schema, refused unless it is byte for byte the release tests/data pins."""
    schema = SCHEMA.read_bytes()
    digest = hashlib.sha256(schema).hexdigest()
    if digest != SCHEMA_SHA256:
        pytest.fail(
            f"{SCHEMA.relative_to(REPO)} has SHA-256 {digest}, not the pinned {SCHEMA_SHA256}: "
            "restore it with git checkout, or see tests/data/README.md to update it"
        )
    return Draft7Validator(json.loads(schema))


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return catalog(load_routes(REPO / "routes"), BrokerSettings(), __version__)


def test_the_catalog_is_valid_asyncapi_3(
    validator: Draft7Validator, document: dict[str, Any]
) -> None:
    assert [e.message for e in validator.iter_errors(document)] == []


def test_the_schema_check_can_fail(validator: Draft7Validator, document: dict[str, Any]) -> None:
    broken = copy.deepcopy(document)
    broken["operations"]["sink.shipping-api.receive"]["action"] = "publish"
    assert list(validator.iter_errors(broken)) != []


def test_event_types_publishers_routes_and_sinks_are_described(document: dict[str, Any]) -> None:
    assert document["channels"]["event.shop.order.paid"]["address"] == "shop.order.paid"
    ops = document["operations"]
    assert ops["source.shop-webhook.send.shop.order.paid"]["action"] == "send"
    receive = ops["route.paid-orders-to-inventory.receive.event.shop.order.paid"]
    assert receive == {
        "action": "receive",
        "channel": {"$ref": "#/channels/event.shop.order.paid"},
        "summary": "router: route paid-orders-to-inventory "
        "when has(data.lines) && size(data.lines) > 0",
    }
    reserved = ops["route.reserved-orders-to-shipping.receive.event.inventory.order.reserved"]
    assert reserved["summary"] == "router: route reserved-orders-to-shipping"
    assert ops["route.reserved-orders-to-shipping.send.shipping-api"]["channel"] == {
        "$ref": "#/channels/sink.shipping-api"
    }
    assert document["channels"]["sink.shipping-api"]["address"] == "esb.sink.shipping-api"
    shipped = document["components"]["messages"]["route.reserved-orders-to-shipping"]
    assert shipped["payload"] == {"$ref": "#/components/schemas/shipment.v1"}
    assert document["components"]["schemas"]["shipment.v1"]["required"][0] == "reference"


def test_cli_writes_the_document(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.yaml"
    result = CliRunner().invoke(
        main, ["catalog", "--routes", str(REPO / "routes"), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {out}: ")
    assert yaml.safe_load(out.read_text())["asyncapi"] == "3.0.0"


def test_the_exchange_is_described_in_the_virtual_host_the_broker_url_names() -> None:
    broker = BrokerSettings.model_validate({"url": "amqp://shop:secret@mq.example.com/shop%2Fprod"})
    document = catalog(load_routes(REPO / "routes"), broker, __version__)
    bound = [channel["bindings"]["amqp"] for channel in document["channels"].values()]
    places = [amqp.get("exchange") or amqp["queue"] for amqp in bound]
    assert {"exchange", "queue"} <= {amqp["is"].replace("routingKey", "exchange") for amqp in bound}
    assert {place["vhost"] for place in places} == {"shop/prod"}
