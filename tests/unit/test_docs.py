"""The settings reference cannot drift from the pydantic models."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from adapters.email.settings import EmailSinkSettings
from adapters.files.settings import BatchFileSinkSettings, FileSourceSettings
from adapters.http.settings import HttpSinkSettings
from adapters.http_poll.settings import HttpPollSettings
from adapters.jsonl.settings import JsonLinesSinkSettings, JsonLinesSourceSettings
from adapters.mqtt.settings import MqttSinkSettings, MqttSourceSettings
from adapters.sql.settings import SqlSinkSettings
from adapters.sql.source_settings import SqlSourceSettings
from adapters.webhook.settings import WebhookSourceSettings
from esb.routing import model as routes
from esb.settings import (
    BrokerSettings,
    CircuitSettings,
    ConsumeSettings,
    FailureSettings,
    IdempotencySettings,
    JournalSettings,
    RetrySettings,
    ServiceSettings,
    SourceSettings,
)

DOCS = Path(__file__).parents[2] / "docs"


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start : end if end != -1 else None]


@pytest.mark.parametrize(
    ("doc", "heading", "model"),
    [
        ("settings.md", "## broker", BrokerSettings),
        ("settings.md", "## service", ServiceSettings),
        ("settings.md", "## consume", ConsumeSettings),
        ("settings.md", "## source", SourceSettings),
        ("settings.md", "## journal", JournalSettings),
        ("settings.md", "## retry", RetrySettings),
        ("settings.md", "## failures", FailureSettings),
        ("settings.md", "## circuit", CircuitSettings),
        ("settings.md", "## idempotency", IdempotencySettings),
        ("adapters/jsonl.md", "## Source", JsonLinesSourceSettings),
        ("adapters/jsonl.md", "## Sink", JsonLinesSinkSettings),
        ("adapters/http-webhook.md", "## Settings", WebhookSourceSettings),
        ("adapters/http.md", "## Settings", HttpSinkSettings),
        ("adapters/http-poll.md", "## Settings", HttpPollSettings),
        ("adapters/email.md", "## Settings", EmailSinkSettings),
        ("adapters/files.md", "### Source settings", FileSourceSettings),
        ("adapters/files.md", "### Sink settings", BatchFileSinkSettings),
        ("adapters/sql.md", "### Sink settings", SqlSinkSettings),
        ("adapters/sql.md", "### Source settings", SqlSourceSettings),
        ("adapters/mqtt.md", "### Source settings", MqttSourceSettings),
        ("adapters/mqtt.md", "### Sink settings", MqttSinkSettings),
        ("routes.md", "### File (`RouteFile`)", routes.RouteFile),
        ("routes.md", "### Source (`SourceDecl`)", routes.SourceDecl),
        ("routes.md", "### Sink (`SinkDecl`)", routes.SinkDecl),
        ("routes.md", "### Route (`Route`)", routes.Route),
        ("routes.md", "### Step (`Step`)", routes.Step),
        ("routes.md", "### Map (`MapSpec`)", routes.MapSpec),
        ("routes.md", "### Field rule (`FieldRule`)", routes.FieldRule),
        ("routes.md", "### Conversion (`Conversion`)", routes.Conversion),
        ("routes.md", "### Date (`DateConversion`)", routes.DateConversion),
        ("routes.md", "### Date and time (`DateTimeConversion`)", routes.DateTimeConversion),
        ("routes.md", "### Money (`DecimalConversion`)", routes.DecimalConversion),
        ("routes.md", "### Unit (`UnitConversion`)", routes.UnitConversion),
    ],
)
def test_every_setting_is_documented_and_nothing_else(
    doc: str, heading: str, model: type[BaseModel]
) -> None:
    table = section((DOCS / doc).read_text(), heading)
    documented = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert documented == {info.alias or name for name, info in model.model_fields.items()}


def test_route_tests_and_expectations_are_documented() -> None:
    table = section((DOCS / "routes.md").read_text(), "### Test case (`RouteTest`)")
    documented = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    fields = set(routes.RouteTest.model_fields) | set(routes.Expectation.model_fields)
    assert documented == fields
