"""``esb dlq``: inspect, re-drive and purge the parking lots."""

from __future__ import annotations

from pathlib import Path

import click

from esb.broker import Broker
from esb.cli.common import EsbGroup, run_connected
from esb.cli.options import CONFIG_OPTION, queue_specs, routes_option
from esb.dlq import Lot, browse, compile_filter, depth, fixed_lots, parking_lot, replay
from esb.dlq_view import render
from esb.masking import Masker
from esb.settings import ProcessSettings, load_settings
from esb.topology import QueueNames

DLQ_QUEUES = click.argument("queues", nargs=-1, metavar="[QUEUE]...")
DLQ_ROUTES = routes_option("Every parking lot of this routes directory's queues.")

#: The routes directory read when no queue is named: where `esb run` is told to find it.
DEFAULT_ROUTES = Path("routes")


@click.group(cls=EsbGroup)
def dlq() -> None:
    """Inspect and re-drive parked messages (each work queue's .dlq, and unrouted events)."""


def _lots(settings: ProcessSettings, queues: tuple[str, ...], routes_dir: Path | None) -> list[Lot]:
    specs = queue_specs(settings, queues, (), routes_dir)
    if not specs:
        raise click.UsageError("name a QUEUE (or its .dlq), or give --routes DIR")
    names = QueueNames(settings.broker.prefix)
    return list(dict.fromkeys(parking_lot(spec.name, names) for spec in specs))


def _every_lot(
    settings: ProcessSettings, queues: tuple[str, ...], routes_dir: Path | None
) -> tuple[list[Lot], str | None]:
    """The named lots; with none named, every lot the prefix's names, consume.queue and the
    routes directory (``routes/`` by default) give, and the one line saying what that misses:
    AMQP cannot list queues, and esb does not use the management API."""
    if queues or routes_dir is not None:
        return _lots(settings, queues, routes_dir), None
    names = QueueNames(settings.broker.prefix)
    lots = fixed_lots(names)
    if DEFAULT_ROUTES.is_dir():
        lots += _lots(settings, (), DEFAULT_ROUTES)
        missed = f"queues that {DEFAULT_ROUTES}/ does not name"
    else:
        lots += _lots(settings, (), None) if settings.consume.queue else []
        missed = f"sinks and pools (no {DEFAULT_ROUTES}/ here: give --routes DIR)"
    unreached = (
        f"not searched: parking lots of {missed}; AMQP cannot list queues, "
        "name one as QUEUE to reach it"
    )
    return list(dict.fromkeys(lots)), unreached


def _masker(settings: ProcessSettings) -> Masker:
    """The masking of logs: what a process would not log, an operator's terminal does not show."""
    return Masker(settings.service.mask_fields, settings.service.mask_patterns)


@dlq.command("list")
@DLQ_QUEUES
@DLQ_ROUTES
@CONFIG_OPTION
def dlq_list(queues: tuple[str, ...], routes_dir: Path | None, config_file: Path | None) -> None:
    """Each parking lot's depth and a line per parked message: id, type, reason, attempts.

    With no QUEUE and no --routes: every parking lot of the prefix that exists, unrouted
    events included."""
    settings = load_settings(None, config_file)
    lots, unreached = _every_lot(settings, queues, routes_dir)
    mask = _masker(settings)

    async def go(broker: Broker) -> None:
        channel = await broker.connection.channel()
        for lot in lots:
            count = await depth(broker, lot.name)
            if count is None:
                if unreached is None:
                    click.echo(f"{lot.name}: not declared")
                continue
            click.echo(f"{lot.name}: {count} parked")
            if count:
                async for parked in browse(channel, lot.name):
                    click.echo(f"  {mask.text(parked.summary())}")
        await channel.close()

    run_connected(settings, "esb-dlq", go)
    if unreached is not None:
        click.echo(unreached)


@dlq.command("show")
@click.argument("message_id")
@DLQ_QUEUES
@DLQ_ROUTES
@click.option(
    "--unmasked",
    is_flag=True,
    help="Show personal data in clear (mask_fields, e-mail addresses, card numbers), "
    "to fix it; it then stays in your terminal's scrollback.",
)
@CONFIG_OPTION
def dlq_show(
    message_id: str,
    queues: tuple[str, ...],
    routes_dir: Path | None,
    unmasked: bool,
    config_file: Path | None,
) -> None:
    """One parked message: every header (why it failed) and its event, indented, personal
    data masked. With no QUEUE and no --routes it is looked for as `esb dlq list` looks."""
    settings = load_settings(None, config_file)
    lots, _ = _every_lot(settings, queues, routes_dir)
    mask = None if unmasked else _masker(settings)

    async def go(broker: Broker) -> bool:
        channel = await broker.connection.channel()
        try:
            for lot in lots:
                if not await depth(broker, lot.name):
                    continue
                async for parked in browse(channel, lot.name):
                    if parked.id == message_id:
                        click.echo("\n".join(render(lot.name, parked, mask)))
                        return True
            return False
        finally:
            await channel.close()

    if not run_connected(settings, "esb-dlq", go):
        searched = ", ".join(lot.name for lot in lots)
        raise click.ClickException(f"no parked message {message_id!r} in {searched}")


@dlq.command("replay")
@DLQ_QUEUES
@DLQ_ROUTES
@click.option(
    "--filter", "filter_expr", help="CEL condition over the event, e.g. 'data.total > 0'."
)
@click.option("--to", "to_queue", help="Queue to replay into (default: where each one failed).")
@click.option("--limit", type=click.IntRange(min=1), help="Replay at most this many.")
@CONFIG_OPTION
def dlq_replay(
    queues: tuple[str, ...],
    routes_dir: Path | None,
    filter_expr: str | None,
    to_queue: str | None,
    limit: int | None,
    config_file: Path | None,
) -> None:
    """Re-drive parked messages after a fix; ids are kept, so sinks de-duplicate."""
    settings = load_settings(None, config_file)
    lots = _lots(settings, queues, routes_dir)
    expression = compile_filter(filter_expr)

    async def go(broker: Broker) -> int:
        total = 0
        for lot in lots:
            done = await replay(
                broker,
                lot,
                expression=expression,
                to=to_queue,
                limit=None if limit is None else limit - total,
            )
            for message_id, target in done:
                click.echo(f"replayed {message_id} from {lot.name} to {target}")
            total += len(done)
        return total

    total = run_connected(settings, "esb-dlq", go)
    click.echo(f"{total} replayed")


@dlq.command("purge")
@DLQ_QUEUES
@DLQ_ROUTES
@click.option("--yes", is_flag=True, help="Do not ask (for scripts).")
@CONFIG_OPTION
def dlq_purge(
    queues: tuple[str, ...], routes_dir: Path | None, yes: bool, config_file: Path | None
) -> None:
    """Delete every parked message of the named parking lots, after asking."""
    settings = load_settings(None, config_file)
    lots = _lots(settings, queues, routes_dir)

    async def counts(broker: Broker) -> dict[str, int]:
        found = {lot.name: await depth(broker, lot.name) for lot in lots}
        return {lot: n for lot, n in found.items() if n}

    found = run_connected(settings, "esb-dlq", counts)
    if not found:
        click.echo("nothing parked")
        return
    summary = ", ".join(f"{lot} ({n})" for lot, n in found.items())
    if not yes and not click.confirm(f"delete every parked message of {summary}?"):
        raise click.ClickException("nothing purged")

    async def purge(broker: Broker) -> None:
        channel = await broker.connection.channel()
        for lot in found:
            queue = await channel.declare_queue(lot, passive=True)
            await queue.purge()
            click.echo(f"purged {lot}")
        await channel.close()

    run_connected(settings, "esb-dlq", purge)
