"""docs/settings-reference.md is what the settings models give, and every setting has a
description and an example its own type accepts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, TypeAdapter

from esb.registry import load_all
from esb.settings import ProcessSettings
from esb.settings_reference import PAGE, nested_model, render
from tests.support.doc_blocks import ROOT


def test_the_committed_reference_is_generated_from_the_models() -> None:
    assert (ROOT / PAGE).read_text() == render(), "run `make docs` and commit the page"


def test_the_settings_page_links_the_reference() -> None:
    assert "(settings-reference.md)" in (ROOT / "docs" / "settings.md").read_text()


def models() -> Iterator[tuple[str, type[BaseModel]]]:
    for section, info in ProcessSettings.model_fields.items():
        model = nested_model(info.annotation)
        if model is not None:
            yield section, model
    for adapter in load_all():
        for kind in adapter.kinds():
            yield f"{adapter.name} {kind}", getattr(adapter, kind).settings_model


def fields() -> Iterator[tuple[str, Any]]:
    def walk(prefix: str, model: type[BaseModel]) -> Iterator[tuple[str, Any]]:
        for name, info in model.model_fields.items():
            yield f"{prefix}.{name}", info
            inner = nested_model(info.annotation)
            if inner is not None:
                yield from walk(f"{prefix}.{name}", inner)

    for prefix, model in models():
        yield from walk(prefix, model)


FIELDS = list(fields())


@pytest.mark.parametrize(("name", "info"), FIELDS, ids=[name for name, _ in FIELDS])
def test_every_setting_has_a_description_and_a_valid_example(name: str, info: Any) -> None:
    assert info.description, f"{name}: Field(description=...)"
    assert info.examples, f"{name}: Field(examples=[...])"
    field_type = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    for example in info.examples:
        TypeAdapter(field_type).validate_python(example)
