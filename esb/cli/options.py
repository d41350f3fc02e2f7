"""The options several commands take: --config, --routes and the queues a command acts on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from esb.routing.loader import load_routes
from esb.routing.services import routing_queues
from esb.settings import ProcessSettings
from esb.topology import QueueNames, QueueSpec

F = TypeVar("F", bound=Callable[..., Any])

ROUTES_DIR = click.Path(path_type=Path, file_okay=False)

CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML settings file (sections: broker, service, consume, adapter).",
)


def routes_option(help_text: str, *, required: bool = False) -> Callable[[F], F]:
    """``--routes DIR`` into ``routes_dir``; each command says what it takes from it."""
    return click.option(
        "--routes", "routes_dir", required=required, type=ROUTES_DIR, help=help_text
    )


ROUTES_REQUIRED = routes_option("Routes directory (*.yaml).", required=True)

QUEUE_OPTION = click.option("--queue", "queues", multiple=True, help="A work queue (repeatable).")
SINK_OPTION = click.option(
    "--sink",
    "sinks",
    multiple=True,
    help="A sink's queue, by the sink's service name: <prefix>.sink.NAME (repeatable).",
)
BIND_OPTION = click.option(
    "--bind",
    "bindings",
    multiple=True,
    help="Topic pattern for --queue and --sink on the events exchange (default: consume.bindings).",
)
QUEUES_OF_ROUTES = routes_option(
    "Also every queue this routes directory needs (router, transformers, sinks)."
)


def queue_specs(
    settings: ProcessSettings,
    queues: tuple[str, ...],
    bindings: tuple[str, ...],
    routes_dir: Path | None = None,
    sinks: tuple[str, ...] = (),
) -> list[QueueSpec]:
    """The queues named by --queue and --sink (else consume.queue) and those the routes
    directory needs."""
    queue_names = QueueNames(settings.broker.prefix)
    names = [*queues, *(queue_names.sink(sink) for sink in sinks)]
    if not names and settings.consume.queue:
        names = [settings.consume.queue]
    patterns = list(bindings) or settings.consume.bindings
    specs = [QueueSpec(name, patterns) for name in names]
    if routes_dir is not None:
        specs.extend(routing_queues(load_routes(routes_dir), queue_names))
    return specs
