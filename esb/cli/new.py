"""``esb new``: start an adapter package from the template."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from esb.cli.common import EsbGroup
from esb.scaffold import new_adapter


@click.group(cls=EsbGroup)
def new() -> None:
    """Start something new from a template."""


@new.command("adapter")
@click.argument("name")
@click.option(
    "--dir",
    "parent",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Where to create esb-NAME/.",
)
def new_adapter_command(name: str, parent: Path) -> None:
    """A package for adapter NAME: entry point, settings, a polling source, a sink, tests.

    It prints how to install it into esb's own environment (the interpreter
    running this command), where ``esb run`` finds it.
    """
    target = new_adapter(name, parent)
    python = shlex.quote(sys.executable)
    click.echo(
        f"created {target}: cd {shlex.quote(str(target))} && "
        f"{python} -m pip install -e '.[dev]' && {python} -m pytest"
    )
