"""The hand-written settings tables of docs/settings.md and the adapter pages agree with the
models that docs/settings-reference.md is generated from: every setting they name exists, and
a default they quote as a value is the model's default. A page explains; the models decide."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from esb.registry import load_adapter
from esb.settings import ProcessSettings
from esb.settings_reference import default_text, nested_model
from tests.support.doc_blocks import ROOT

HEADER = re.compile(r"^\| setting \| default \|")
HEADING = re.compile(r"^#+ (?P<title>.+)$")
CELL_NAME = re.compile(r"^`(?P<name>[a-z_][a-z0-9_.]*)`$")
QUOTED = re.compile(r"^`(?P<value>[^`]*)`$")


@dataclass(frozen=True)
class Row:
    page: str
    heading: str
    name: str
    default: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.heading}:{self.name}"


def rows() -> Iterator[Row]:
    pages = [ROOT / "docs" / "settings.md", *sorted((ROOT / "docs" / "adapters").glob("*.md"))]
    for path in pages:
        heading = ""
        in_table = False
        for line in path.read_text().splitlines():
            if match := HEADING.match(line):
                heading = match["title"]
            if HEADER.match(line):
                in_table = True
                continue
            if in_table and not line.startswith("|"):
                in_table = False
            if not in_table or line.startswith("| ---"):
                continue
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            match = CELL_NAME.match(cells[0])
            assert match, f"{path.name}: {cells[0]!r} is not a `setting` name"
            yield Row(str(path.relative_to(ROOT)), heading, match["name"], cells[1])


def fields_of(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    found: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        found[prefix + (info.alias or name)] = info
        inner = nested_model(info.annotation)
        if inner is not None:
            found.update(fields_of(inner, f"{prefix}{info.alias or name}."))
    return found


def settings_of(row: Row) -> dict[str, FieldInfo]:
    """The settings a table can mean: a section of the process settings on settings.md, the
    page's adapter's source and sink settings on an adapter page."""
    if row.page == "docs/settings.md":
        section = row.heading.split()[0].strip("`")
        info = ProcessSettings.model_fields.get(section)
        model = nested_model(info.annotation) if info is not None else None
        assert model is not None, f"settings.md: section {row.heading!r} is no settings section"
        return fields_of(model)
    adapter = load_adapter(row.page.removeprefix("docs/adapters/").removesuffix(".md"))
    kinds = [kind for kind in adapter.kinds() if kind in row.heading.lower()] or adapter.kinds()
    found: dict[str, FieldInfo] = {}
    for kind in kinds:
        found.update(fields_of(getattr(adapter, kind).settings_model))
    return found


ROWS = list(rows())


def test_the_tables_are_found() -> None:
    assert len(ROWS) > 150
    assert {row.page for row in ROWS} >= {"docs/settings.md", "docs/adapters/sql.md"}


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_a_documented_setting_exists_with_the_default_it_quotes(row: Row) -> None:
    fields = settings_of(row)
    assert row.name in fields, f"{row.id}: no such setting; the model has {sorted(fields)}"
    info = fields[row.name]
    quoted = QUOTED.match(row.default)
    if quoted is None or "<" in quoted["value"] or default_text(info) == "required":
        return  # prose ("none", "stdin", "`<directory>/done`") explains a derived default
    default = info.get_default(call_default_factory=True)
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    expected = to_jsonable_python(default)
    try:
        written = yaml.safe_load(quoted["value"])
    except yaml.YAMLError:  # `*.csv`, `,`: text YAML would read otherwise
        written = quoted["value"]
    assert written == expected or str(written) == str(expected), (
        f"{row.id}: the page says {written!r}, the model {expected!r}"
    )
