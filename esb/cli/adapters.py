"""``esb adapters``: the installed adapters and their settings."""

from __future__ import annotations

import click
from pydantic.fields import FieldInfo

from esb.cli.common import EsbGroup
from esb.registry import load_adapter, load_all
from esb.settings import AdapterSettings
from esb.settings_reference import default_text, example_text


@click.group(cls=EsbGroup)
def adapters() -> None:
    """Installed adapters (the esb.adapters entry-point group)."""


@adapters.command("list")
def adapters_list() -> None:
    """One line per installed adapter: name, kinds, description."""
    for adapter in load_all():
        click.echo(f"{adapter.name:<16} {','.join(adapter.kinds()):<12} {adapter.description}")


def _describe_field(name: str, info: FieldInfo) -> str:
    """One setting as a terminal line: its variable, meaning, default and an example."""
    default = default_text(info).strip("`")
    default = default if default == "required" else f"default {default}"
    example = f"; e.g. {example_text(info).strip('`')}" if info.examples else ""
    description = " ".join((info.description or "").split())
    return f"  {name} (ESB_ADAPTER__{name.upper()}): {description} ({default}{example})"


@adapters.command("show")
@click.argument("name")
def adapters_show(name: str) -> None:
    """An adapter's settings, generated from its pydantic models."""
    adapter = load_adapter(name)
    click.echo(f"{adapter.name}: {adapter.description}")
    for kind in adapter.kinds():
        model: type[AdapterSettings] = getattr(adapter, kind).settings_model
        click.echo(f"{kind} settings (ESB_ADAPTER__<NAME> or adapter.<name>):")
        for field_name, info in model.model_fields.items():
            click.echo(_describe_field(field_name, info))
