"""``esb dlq``: inspect, re-drive and purge the parking lots."""

from __future__ import annotations

from pathlib import Path

import click

from esb.broker import Broker
from esb.cli.common import EsbGroup, run_connected
from esb.cli.options import CONFIG_OPTION, queue_specs, routes_option
from esb.dlq import browse, compile_filter, depth, parking_lot, printable, replay
from esb.settings import ProcessSettings, load_settings

DLQ_QUEUES = click.argument("queues", nargs=-1, metavar="[QUEUE]...")
DLQ_ROUTES = routes_option("Every parking lot of this routes directory's queues.")


@click.group(cls=EsbGroup)
def dlq() -> None:
    """Inspect and re-drive parked messages (each work queue's .dlq)."""


def _lots(settings: ProcessSettings, queues: tuple[str, ...], routes_dir: Path | None) -> list[str]:
    specs = queue_specs(settings, queues, (), routes_dir)
    if not specs:
        raise click.UsageError("name a QUEUE (or its .dlq), or give --routes DIR")
    return list(dict.fromkeys(parking_lot(spec.name) for spec in specs))


@dlq.command("list")
@DLQ_QUEUES
@DLQ_ROUTES
@CONFIG_OPTION
def dlq_list(queues: tuple[str, ...], routes_dir: Path | None, config_file: Path | None) -> None:
    """Each parking lot's depth and a line per parked message: id, type, reason, attempts."""
    settings = load_settings(None, config_file)
    lots = _lots(settings, queues, routes_dir)

    async def go(broker: Broker) -> None:
        channel = await broker.connection.channel()
        for lot in lots:
            count = await depth(channel, lot)
            if count is None:
                click.echo(f"{lot}: not declared")
                continue
            click.echo(f"{lot}: {count} parked")
            if count:
                async for parked in browse(channel, lot):
                    click.echo(f"  {parked.summary()}")
        await channel.close()

    run_connected(settings, "esb-dlq", go)


@dlq.command("show")
@click.argument("message_id")
@DLQ_QUEUES
@DLQ_ROUTES
@CONFIG_OPTION
def dlq_show(
    message_id: str, queues: tuple[str, ...], routes_dir: Path | None, config_file: Path | None
) -> None:
    """One parked message: every header (why it failed) and its event."""
    settings = load_settings(None, config_file)
    lots = _lots(settings, queues, routes_dir)

    async def go(broker: Broker) -> bool:
        channel = await broker.connection.channel()
        try:
            for lot in lots:
                if not await depth(channel, lot):
                    continue
                async for parked in browse(channel, lot):
                    if parked.id != message_id:
                        continue
                    click.echo(f"parking lot: {lot}")
                    for key in sorted(parked.message.headers or {}):
                        click.echo(printable(f"{key}: {parked.header(key)}"))
                    body = parked.event.to_structured() if parked.event else parked.message.body
                    click.echo(f"event: {printable(body.decode(errors='replace'))}")
                    return True
            return False
        finally:
            await channel.close()

    if not run_connected(settings, "esb-dlq", go):
        raise click.ClickException(f"no parked message {message_id!r} in {', '.join(lots)}")


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
                click.echo(f"replayed {message_id} from {lot} to {target}")
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
        channel = await broker.connection.channel()
        found = {lot: await depth(channel, lot) for lot in lots}
        await channel.close()
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
