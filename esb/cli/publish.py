"""``esb publish``: one event onto the bus, confirmed by the broker."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from esb.cli.common import run_connected
from esb.cli.options import CONFIG_OPTION
from esb.envelope import CloudEvent, parse_structured
from esb.settings import load_settings


def _event_from_options(
    file: Path | None, type_: str | None, source: str, data: str | None, subject: str | None
) -> CloudEvent:
    if file is not None:
        try:
            return parse_structured(file.read_bytes())
        except OSError as exc:
            raise click.ClickException(f"cannot read {file}: {exc.strerror}") from None
    if type_ is None:
        raise click.UsageError("give an event FILE or --type")
    try:
        payload = orjson.loads(data) if data is not None else None
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--data") from None
    extra = {"subject": subject} if subject else {}
    return CloudEvent.new(type_, source, payload, **extra)


@click.command()
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--type", "type_", help="Event type (also the routing key).")
@click.option("--source", default="urn:esb:cli", show_default=True, help="Event source.")
@click.option("--data", help="Event data as JSON.")
@click.option("--subject", help="Event subject.")
@CONFIG_OPTION
def publish(
    file: Path | None,
    type_: str | None,
    source: str,
    data: str | None,
    subject: str | None,
    config_file: Path | None,
) -> None:
    """Publish one event: a structured CloudEvent FILE, or built from options."""
    event = _event_from_options(file, type_, source, data, subject)
    settings = load_settings(None, config_file)
    run_connected(settings, "esb-publish", lambda broker: broker.publish(event))
    click.echo(f"published {event.id} ({event.type}), confirmed by the broker")
