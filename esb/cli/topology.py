"""``esb topology``: declare and show the exchange and queues esb uses."""

from __future__ import annotations

from pathlib import Path

import click

from esb.broker import Broker
from esb.cli.common import EsbGroup, run_connected
from esb.cli.options import (
    BIND_OPTION,
    CONFIG_OPTION,
    QUEUE_OPTION,
    QUEUES_OF_ROUTES,
    SINK_OPTION,
    queue_specs,
)
from esb.consumer import MIN_RETRY_LEVELS
from esb.permissions import definitions, load_users, vhost_of, write_definitions
from esb.retry import declare_delay_queues, delay_queue
from esb.routing.loader import load_routes
from esb.settings import load_settings
from esb.topology import (
    HASH_EXCHANGE,
    QueueNames,
    declare_exchange,
    declare_queue,
    dlq_name,
    queue_counts,
)


@click.group(cls=EsbGroup)
def topology() -> None:
    """The exchange and queues esb uses."""


@topology.command("declare")
@CONFIG_OPTION
@QUEUE_OPTION
@SINK_OPTION
@BIND_OPTION
@QUEUES_OF_ROUTES
@click.option(
    "--users",
    "users_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML file naming one RabbitMQ user per process (docs/security.md): write each "
    "one's least-privilege permissions to --definitions.",
)
@click.option(
    "--definitions",
    "definitions_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where --users writes the RabbitMQ definitions (rabbitmqctl import_definitions FILE).",
)
def topology_declare(
    config_file: Path | None,
    queues: tuple[str, ...],
    sinks: tuple[str, ...],
    bindings: tuple[str, ...],
    routes_dir: Path | None,
    users_file: Path | None,
    definitions_file: Path | None,
) -> None:
    """Declare the events exchange and work queues with their parking lots and delay queues
    (idempotent); with --users, also the users' permissions, as a definitions file."""
    if (users_file is None) != (definitions_file is None):
        raise click.UsageError("--users and --definitions go together")
    settings = load_settings(None, config_file)
    broker_settings = settings.broker.model_copy(update={"declare": True})
    specs = queue_specs(settings, queues, bindings, routes_dir, sinks)
    names = QueueNames(settings.broker.prefix)
    delays = max(settings.retry.max_retries, MIN_RETRY_LEVELS)
    document = None
    if users_file is not None:
        emits = None
        if routes_dir is not None:
            emits = {name: s.emits for name, s in load_routes(routes_dir).sources.items()}
        vhost = vhost_of(settings.broker.url.get_secret_value())
        users = load_users(users_file)
        document = definitions(users, names, settings.broker.exchange, vhost, emits)

    async def go(broker: Broker) -> None:
        channel = await broker.connection.channel()
        await declare_exchange(channel, settings.broker.exchange)
        for spec in specs:
            await declare_queue(channel, spec, broker_settings)
            retries = 0 if spec.name == names.unrouted else delays
            await declare_delay_queues(channel, spec.name, retries, broker_settings)
            bound = f"bound to {', '.join(spec.bindings)}" if spec.bindings else "not bound"
            if spec.partition_of is not None:
                bound = f"a partition of {spec.partition_of} ({HASH_EXCHANGE})"
            extra = f", {delay_queue(spec.name, 1)}..{retries}" if retries else ""
            click.echo(f"queue {spec.name} (+ {dlq_name(spec.name)}{extra}) {bound}")

    run_connected(settings, "esb-topology", go)
    click.echo(f"exchange {settings.broker.exchange} (topic) declared")
    if document is not None and definitions_file is not None:
        write_definitions(definitions_file, document)
        click.echo(
            f"wrote {definitions_file}: {len(document['users'])} users with least privilege "
            f"on vhost {document['vhosts'][0]['name']!r}; load it with: "
            f"rabbitmqctl import_definitions {definitions_file}"
        )


@topology.command("show")
@CONFIG_OPTION
@QUEUE_OPTION
@QUEUES_OF_ROUTES
def topology_show(
    config_file: Path | None, queues: tuple[str, ...], routes_dir: Path | None
) -> None:
    """Show the exchange and the depth of each work queue and its parking lot."""
    settings = load_settings(None, config_file)
    specs = queue_specs(settings, queues, (), routes_dir)

    async def go(broker: Broker) -> None:
        click.echo(
            f"exchange {settings.broker.exchange} (topic) at {settings.broker.redacted_url()}"
        )
        for spec in specs:
            for name in (spec.name, dlq_name(spec.name)):
                figures = await queue_counts(broker.connection, name)
                if figures is None:
                    click.echo(f"queue {name}: not declared")
                    continue
                depth, consumers = figures
                click.echo(f"queue {name}: {depth} ready, {consumers} consumers")

    run_connected(settings, "esb-topology", go)
