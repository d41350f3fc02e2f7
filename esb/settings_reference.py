"""The settings reference page, generated from the settings models.

Every section of :class:`~esb.settings.ProcessSettings` and the source and sink settings of
every installed adapter: each setting's name, environment variable, type, default, example
and description, as the models declare them. ``scripts/settings_reference.py`` writes it to
``docs/settings-reference.md``; a test checks the committed page is what this renders.
"""

from __future__ import annotations

import inspect
import json
import types
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from esb.registry import load_all
from esb.settings import ENV_PREFIX, ProcessSettings, redact_url

HEADER = """\
# Settings reference

<!-- Generated from the settings models by scripts/settings_reference.py (`make docs`); do
not edit: change the model's Field(description=..., examples=[...]) and regenerate. -->

Every setting of an esb process, generated from its pydantic models: the sections every
process reads, then each installed adapter's `adapter` section. Set one in the YAML file
given with `--config` (the section, then the name) or in the environment variable shown.
How the sources combine, and what each section is for: [settings](settings.md).
"""


def type_name(annotation: Any) -> str:
    """A short, readable name of a field's type: ``int``, ``list[str]``, ``quorum | classic``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return type_name(get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(str(arg) for arg in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(arg) for arg in get_args(annotation))
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{args}]" if args else name
    if annotation is type(None):
        return "null"
    if inspect.isclass(annotation) and issubclass(annotation, Enum):
        return " | ".join(str(member.value) for member in annotation)
    return getattr(annotation, "__name__", str(annotation))


def value_text(value: Any) -> str:
    """A value as a reader writes it in YAML or an environment variable: strings bare,
    anything else as JSON; a secret URL with its password masked."""
    if isinstance(value, SecretStr):
        value = redact_url(value.get_secret_value())
    plain = to_jsonable_python(value)
    text = plain if isinstance(plain, str) else json.dumps(plain)
    return f"`{text}`" if text != "" else '`""`'


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is None and info.default is PydanticUndefined:
        return "required"
    return value_text(info.get_default(call_default_factory=True))


def example_text(info: FieldInfo) -> str:
    return value_text(info.examples[0]) if info.examples else "none yet"


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (directly or as an optional value), else ``None``."""
    for candidate in (annotation, *get_args(annotation)):
        if inspect.isclass(candidate) and issubclass(candidate, BaseModel):
            return candidate
    return None


def rows(model: type[BaseModel], path: list[str]) -> Iterator[str]:
    for name, info in model.model_fields.items():
        key = info.alias or name
        dotted = [*path, key]
        env = ENV_PREFIX + "__".join(part.upper() for part in dotted)
        description = " ".join((info.description or "").split())
        cells = [
            f"`{'.'.join(dotted[1:])}`",
            f"`{env}`",
            type_name(info.annotation),
            default_text(info),
            example_text(info),
            description,
        ]
        yield "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
        inner = nested_model(info.annotation)
        if inner is not None:
            yield from rows(inner, dotted)


def table(title: str, model: type[BaseModel], section: str) -> str:
    doc = " ".join(inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].split())
    lines = [
        f"## {title}",
        "",
        *([doc, ""] if doc else []),
        "| setting | variable | type | default | example | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows(model, [section]),
    ]
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole page."""
    parts = [HEADER]
    for section, info in ProcessSettings.model_fields.items():
        model = nested_model(info.annotation)
        if model is not None:
            parts.append(table(f"`{section}`", model, section))
    for adapter in load_all():
        for kind in adapter.kinds():
            model = getattr(adapter, kind).settings_model
            title = f"`adapter`: {adapter.name} {kind}"
            parts.append(table(title, model, "adapter"))
    return "\n".join(parts)


PAGE = Path("docs") / "settings-reference.md"
