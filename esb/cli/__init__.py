"""The ``esb`` command line, a module per command. User mistakes print one line, exit non-zero."""

from __future__ import annotations

import logging

import click

from esb import __version__
from esb.cli import (
    adapters,
    catalog,
    dlq,
    health,
    new,
    publish,
    routes,
    run,
    status,
    topology,
    trace,
)
from esb.cli.common import EsbGroup

__all__ = ["main"]


@click.group(
    cls=EsbGroup,
    commands=[
        adapters.adapters,
        catalog.catalog,
        dlq.dlq,
        health.health,
        new.new,
        publish.publish,
        routes.routes,
        run.run,
        status.status,
        topology.topology,
        trace.trace,
    ],
)
@click.version_option(__version__, prog_name="esb")
def main() -> None:
    """esb: an integration bus of adapters, routes and transformers over RabbitMQ."""


logging.getLogger("aiormq").addHandler(logging.NullHandler())
