"""``esb status``: one view of the bus's queues, rates and circuits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import click
import orjson

from esb.broker import Broker
from esb.cli.common import run_connected
from esb.cli.options import CONFIG_OPTION, QUEUE_OPTION, QUEUES_OF_ROUTES, queue_specs
from esb.consumer import MIN_RETRY_LEVELS
from esb.settings import load_settings
from esb.status import Sample, process_figures, queue_figures, render


@click.command()
@CONFIG_OPTION
@QUEUE_OPTION
@QUEUES_OF_ROUTES
@click.option(
    "--metrics",
    "metrics_urls",
    multiple=True,
    help="A process's /metrics URL (repeatable): rates, circuits, work in flight.",
)
@click.option(
    "--targets",
    "targets_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Prometheus file_sd JSON listing the processes (make demo writes one).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.5),
    default=2.0,
    show_default=True,
    help="Seconds between the two samples rates are taken from.",
)
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
def status(
    config_file: Path | None,
    queues: tuple[str, ...],
    routes_dir: Path | None,
    metrics_urls: tuple[str, ...],
    targets_file: Path | None,
    interval: float,
    watch: bool,
) -> None:
    """One view of the bus: each queue's depth, consumers, rates in and out, messages in
    retry delays and parked (with the oldest parked's age), and each service's circuit."""
    settings = load_settings(None, config_file)
    names = [spec.name for spec in queue_specs(settings, queues, (), routes_dir)]
    if not names:
        raise click.UsageError("name the queues: --routes DIR or --queue Q")
    urls = [*metrics_urls, *_scrape_targets(targets_file)]

    async def sample(broker: Broker) -> Sample:
        levels = max(settings.retry.max_retries, MIN_RETRY_LEVELS)
        figures = [await queue_figures(broker.connection, name, levels) for name in names]
        return Sample(time.time(), figures, await process_figures(urls))

    async def go(broker: Broker) -> None:
        before = await sample(broker)
        while True:
            await asyncio.sleep(interval)
            after = await sample(broker)
            if watch:
                click.clear()
            lines = render(before, after, with_metrics=bool(urls))
            if not urls:
                lines.append("no /metrics given (--metrics URL or --targets FILE): no rates")
            click.echo("\n".join(lines))
            if not watch:
                return
            before = after

    with contextlib.suppress(KeyboardInterrupt):
        run_connected(settings, "esb-status", go)


def _scrape_targets(path: Path | None) -> list[str]:
    """The /metrics URLs of a Prometheus file_sd JSON file."""
    if path is None:
        return []
    try:
        groups = orjson.loads(path.read_bytes())
        return [f"http://{target}/metrics" for group in groups for target in group["targets"]]
    except (OSError, orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise click.ClickException(
            f"--targets {path}: not a Prometheus file_sd JSON list of {{targets: [...]}}: {exc}"
        ) from None
