"""The settings reference cannot drift from the pydantic models."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from adapters.jsonl.settings import JsonLinesSinkSettings, JsonLinesSourceSettings
from esb.settings import BrokerSettings, ConsumeSettings, ServiceSettings

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
        ("adapters/jsonl.md", "## Source", JsonLinesSourceSettings),
        ("adapters/jsonl.md", "## Sink", JsonLinesSinkSettings),
    ],
)
def test_every_setting_is_documented_and_nothing_else(
    doc: str, heading: str, model: type[BaseModel]
) -> None:
    table = section((DOCS / doc).read_text(), heading)
    documented = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert documented == set(model.model_fields)
