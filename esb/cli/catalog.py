"""``esb catalog``: the bus as an AsyncAPI 3.0 document, from the route files."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
import yaml

from esb import __version__
from esb.cli.options import CONFIG_OPTION, ROUTES_REQUIRED
from esb.routing.catalog import catalog as build_catalog
from esb.routing.loader import load_routes
from esb.settings import load_settings


@click.command()
@ROUTES_REQUIRED
@click.option(
    "--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="File to write.")
@CONFIG_OPTION
def catalog(routes_dir: Path, fmt: str, output: Path | None, config_file: Path | None) -> None:
    """Write an AsyncAPI 3.0 document of the whole bus from the route files."""
    settings = load_settings(None, config_file)
    document = build_catalog(load_routes(routes_dir), settings.broker, __version__)
    if fmt == "json":
        text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    else:
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text)
    click.echo(
        f"wrote {output}: {len(document['channels'])} channels, "
        f"{len(document['operations'])} operations"
    )
