"""``esb run``: one adapter, the router, transformers or the journal as a long-lived process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from esb import logs
from esb.adapter import Adapter
from esb.cli.common import EsbGroup
from esb.cli.options import CONFIG_OPTION, ROUTES_REQUIRED
from esb.data_dir import check_writable
from esb.journal_service import run_journal
from esb.registry import load_adapter
from esb.runtime import run_router, run_sink, run_source, run_transformers
from esb.settings import AdapterSettings, ProcessSettings, load_settings

WATCH_OPTION = click.option(
    "--watch",
    is_flag=True,
    help="Also reload when a route file in the routes directory changes, as SIGHUP does.",
)


@click.group(cls=EsbGroup)
def run() -> None:
    """Run one esb process until SIGTERM: an adapter's source or sink, the router, a transformer or
    the journal."""


def _settings(model: type[AdapterSettings] | None, config_file: Path | None) -> ProcessSettings:
    settings = load_settings(model, config_file)
    logs.configure(settings.service.log_level, settings.service.mask_patterns)
    check_writable(settings.service.data_dir)
    return settings


def _prepare(name: str, kind: str, config_file: Path | None) -> tuple[Adapter, ProcessSettings]:
    adapter = load_adapter(name)
    part = getattr(adapter, kind)
    if part is None:
        raise click.ClickException(
            f"adapter {name!r} has no {kind}; it offers: {', '.join(adapter.kinds())}"
        )
    return adapter, _settings(part.settings_model, config_file)


@run.command("source")
@click.argument("name")
@CONFIG_OPTION
def run_source_command(name: str, config_file: Path | None) -> None:
    """Run adapter NAME's source until its input ends or SIGTERM."""
    adapter, settings = _prepare(name, "source", config_file)
    asyncio.run(run_source(adapter, settings))


@run.command("sink")
@click.argument("name")
@CONFIG_OPTION
def run_sink_command(name: str, config_file: Path | None) -> None:
    """Run adapter NAME's sink until SIGTERM."""
    adapter, settings = _prepare(name, "sink", config_file)
    asyncio.run(run_sink(adapter, settings))


@run.command("router")
@ROUTES_REQUIRED
@WATCH_OPTION
@CONFIG_OPTION
def run_router_command(routes_dir: Path, watch: bool, config_file: Path | None) -> None:
    """Route events to transformers and sinks until SIGTERM; SIGHUP reloads the routes."""
    settings = _settings(None, config_file)
    asyncio.run(run_router(settings, routes_dir, watch=watch))


@run.command("transformer")
@click.argument("pools", nargs=-1)
@ROUTES_REQUIRED
@WATCH_OPTION
@CONFIG_OPTION
def run_transformer_command(
    pools: tuple[str, ...], routes_dir: Path, watch: bool, config_file: Path | None
) -> None:
    """Run the steps of the transformer POOLS (the shared pool, transformer, when none is
    given) until SIGTERM: each message's steps of one pool in one hop.

    Step definitions come only from the routes directory (SIGHUP reloads it), never from
    the messages, so a fixed route applies to replayed messages.
    """
    settings = _settings(None, config_file)
    asyncio.run(run_transformers(settings, list(pools), routes_dir, watch=watch))


@run.command("journal")
@CONFIG_OPTION
def run_journal_command(config_file: Path | None) -> None:
    """Store the hop records every process sends (journal.enabled) for esb trace, until
    SIGTERM: SQLite by default (journal.path), PostgreSQL with journal.backend postgres."""
    settings = _settings(None, config_file)
    asyncio.run(run_journal(settings))
