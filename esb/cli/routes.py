"""``esb routes``: check, dry-run and draw route files before they are deployed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import click

from esb.cli.common import EsbGroup
from esb.cli.options import ROUTES_DIR
from esb.errors import EnvelopeError
from esb.routing.graph import dot, mermaid
from esb.routing.loader import RoutesInvalid, load_routes
from esb.routing.report import explain, read_event, run_tests

ROUTES_ARGUMENT = click.argument("routes_dir", metavar="DIR", type=ROUTES_DIR)


@click.group(cls=EsbGroup)
def routes() -> None:
    """Check, dry-run and draw route files before they are deployed."""


@routes.command("validate")
@ROUTES_ARGUMENT
def routes_validate(routes_dir: Path) -> None:
    """Load DIR as the router would; every fault with file, line, route and reason."""
    try:
        table = load_routes(routes_dir)
    except RoutesInvalid as exc:
        for fault in exc.faults:
            click.echo(str(fault), err=True)
        raise click.exceptions.Exit(1) from None
    for warning in table.warnings:
        click.echo(str(warning), err=True)
    warned = f", {len(table.warnings)} warnings" if table.warnings else ""
    click.echo(
        f"{routes_dir}: {len(table.routes)} routes, {len(table.sinks)} sinks, "
        f"{len(table.tests)} tests: valid{warned}"
    )


@routes.command("test")
@ROUTES_ARGUMENT
@click.option(
    "--event",
    "event_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Dry-run this structured CloudEvent (JSON) instead of the directory's test cases.",
)
def routes_test(routes_dir: Path, event_file: Path | None) -> None:
    """Dry-run one event, or run the test cases of DIR like a test suite."""
    table = load_routes(routes_dir)
    for warning in table.warnings:
        click.echo(str(warning), err=True)
    if event_file is not None:
        try:
            event = read_event(event_file)
        except OSError as exc:
            raise click.ClickException(f"cannot read {event_file}: {exc.strerror}") from None
        except EnvelopeError as exc:
            raise click.ClickException(f"{event_file}: not a valid CloudEvent: {exc}") from None
        explain(table, event, click.echo)
        return
    if not table.tests:
        raise click.ClickException(
            f"{routes_dir} has no tests: add a tests: section or use --event"
        )
    results = run_tests(table, click.echo)
    if any(result.failures for result in results):
        raise click.exceptions.Exit(1)


@routes.command("graph")
@ROUTES_ARGUMENT
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "svg"]),
    default="mermaid",
    show_default=True,
    help="svg needs Graphviz's dot on PATH.",
)
def routes_graph(routes_dir: Path, fmt: str) -> None:
    """Draw DIR's flows: event types, conditions, steps and sinks."""
    table = load_routes(routes_dir)
    if fmt == "mermaid":
        click.echo(mermaid(table), nl=False)
        return
    if fmt == "dot":
        click.echo(dot(table), nl=False)
        return
    program = shutil.which("dot")
    if program is None:
        raise click.ClickException(
            "svg needs Graphviz: apt-get install graphviz (or use --format dot)"
        )
    result = subprocess.run(
        [program, "-Tsvg"], input=dot(table).encode(), capture_output=True, check=False
    )
    if result.returncode != 0:
        raise click.ClickException(f"dot failed: {result.stderr.decode().strip()}")
    click.echo(result.stdout.decode(), nl=False)
