"""``esb trace``: an event's path through the bus, from the journal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from esb.cli.options import CONFIG_OPTION
from esb.journal_store import JournalStore
from esb.settings import ProcessSettings, load_settings
from esb.trace import render


@click.command()
@click.argument("event_id", required=False)
@click.option("--correlation", help="Every event of this correlation id.")
@click.option("--key", help="Every event whose business key FIELD has VALUE (journal.keys).")
@CONFIG_OPTION
def trace(
    event_id: str | None, correlation: str | None, key: str | None, config_file: Path | None
) -> None:
    """Print the path of an event through the bus from the journal: every hop with its time,
    and where it is now (applied, waiting in a queue, in a retry delay, or parked).

    Give an EVENT_ID, --correlation ID, or --key FIELD=VALUE (esb trace --key
    order_id=SO-00221).
    """
    chosen = [o for o in (event_id, correlation, key) if o is not None]
    if len(chosen) != 1:
        raise click.UsageError("give one of EVENT_ID, --correlation or --key")
    if key is not None and "=" not in key:
        raise click.UsageError(f"--key {key!r}: write it FIELD=VALUE (order_id=SO-00221)")
    settings = load_settings(None, config_file)
    lines = asyncio.run(_trace(settings, event_id, correlation, key))
    for line in lines:
        click.echo(line)


async def _trace(
    settings: ProcessSettings, event_id: str | None, correlation: str | None, key: str | None
) -> list[str]:
    store = JournalStore(settings.journal)
    await store.open()
    try:
        if event_id is not None:
            correlations = await store.correlations_of_event(event_id)
            what = f"event {event_id}"
        elif key is not None:
            name, _, value = key.partition("=")
            correlations = await store.correlations_of_key(name, value)
            what = f"{name} {value}"
        else:
            correlations = [correlation] if correlation is not None else []
            what = f"correlation {correlation}"
        records = await store.records(correlations)
    finally:
        await store.close()
    if not records:
        raise click.ClickException(
            f"the journal ({settings.journal.backend}) holds nothing of {what}: is "
            "journal.enabled set on the processes and esb run journal running? "
            f"Records are kept {settings.journal.retention_hours:g} hours."
        )
    header = f"{what}: {len(records)} hop records"
    if len(correlations) == 1 and correlation is None:
        header += f", correlation {correlations[0]}"
    return [header, *render(records, focus=event_id)]
