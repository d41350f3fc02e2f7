"""The ``esb`` command line. User mistakes print one line and exit non-zero."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiormq.exceptions
import click
import orjson
import yaml
from pydantic.fields import FieldInfo

from esb import __version__, logs
from esb.adapter import Adapter
from esb.broker import Broker
from esb.consumer import MIN_RETRY_LEVELS
from esb.dlq import browse, compile_filter, depth, parking_lot, printable, replay
from esb.envelope import CloudEvent, parse_structured
from esb.errors import EsbError
from esb.journal_service import run_journal
from esb.journal_store import JournalStore
from esb.metrics import Metrics
from esb.permissions import definitions, load_users, vhost_of, write_definitions
from esb.registry import load_adapter, load_all
from esb.retry import declare_retry_queues, retry_queue
from esb.routing.catalog import catalog as build_catalog
from esb.routing.graph import dot, mermaid
from esb.routing.loader import RoutesInvalid, load_routes
from esb.routing.report import explain, run_tests
from esb.routing.services import routing_queues
from esb.runtime import run_router, run_sink, run_source, run_transformers
from esb.scaffold import new_adapter
from esb.settings import AdapterSettings, ProcessSettings, load_settings
from esb.status import Sample, process_figures, queue_figures
from esb.status import render as render_status
from esb.topology import QueueNames, QueueSpec, declare_exchange, declare_queue, dlq_name
from esb.trace import render

CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML settings file (sections: broker, service, consume, adapter).",
)


class EsbGroup(click.Group):
    """Turns any :class:`EsbError` into a one-line message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EsbError as exc:
            raise click.ClickException(str(exc)) from None


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


@click.group(cls=EsbGroup)
@click.version_option(__version__, prog_name="esb")
def main() -> None:
    """esb: an integration bus of adapters, routes and transformers over RabbitMQ."""


@main.group(cls=EsbGroup)
def adapters() -> None:
    """Installed adapters (the esb.adapters entry-point group)."""


@adapters.command("list")
def adapters_list() -> None:
    """One line per installed adapter: name, kinds, description."""
    for adapter in load_all():
        click.echo(f"{adapter.name:<16} {','.join(adapter.kinds()):<12} {adapter.description}")


def _describe_field(name: str, info: FieldInfo) -> str:
    default = (
        "required"
        if info.is_required()
        else f"default {info.get_default(call_default_factory=True)!r}"
    )
    return f"  {name}: {info.description or ''} ({default})"


@adapters.command("show")
@click.argument("name")
def adapters_show(name: str) -> None:
    """An adapter's settings, generated from its pydantic models."""
    adapter = load_adapter(name)
    click.echo(f"{adapter.name}: {adapter.description}")
    for kind in adapter.kinds():
        model: type[AdapterSettings] = getattr(adapter, kind).settings_model
        click.echo(f"{kind} settings (ESB_ADAPTER__<NAME> or adapter.<name>):")
        for field_name, info in model.model_fields.items():
            click.echo(_describe_field(field_name, info))


@main.group(cls=EsbGroup)
def run() -> None:
    """Run one adapter as a long-lived process."""


def _prepare(name: str, kind: str, config_file: Path | None) -> tuple[Adapter, ProcessSettings]:
    adapter = load_adapter(name)
    part = getattr(adapter, kind)
    if part is None:
        raise click.ClickException(
            f"adapter {name!r} has no {kind}; it offers: {', '.join(adapter.kinds())}"
        )
    settings = load_settings(part.settings_model, config_file)
    logs.configure(settings.service.log_level, settings.service.mask_patterns)
    return adapter, settings


@run.command("source")
@click.argument("name")
@CONFIG_OPTION
def run_source_command(name: str, config_file: Path | None) -> None:
    """Run adapter NAME's source until its input ends or SIGTERM."""
    adapter, settings = _prepare(name, "source", config_file)
    _run(run_source(adapter, settings))


@run.command("sink")
@click.argument("name")
@CONFIG_OPTION
def run_sink_command(name: str, config_file: Path | None) -> None:
    """Run adapter NAME's sink until SIGTERM."""
    adapter, settings = _prepare(name, "sink", config_file)
    _run(run_sink(adapter, settings))


ROUTES_REQUIRED = click.option(
    "--routes",
    "routes_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Routes directory (*.yaml).",
)
ROUTES_ARGUMENT = click.argument(
    "routes_dir", metavar="DIR", type=click.Path(path_type=Path, file_okay=False)
)


WATCH_OPTION = click.option(
    "--watch",
    is_flag=True,
    help="Also reload when a route file in the routes directory changes, as SIGHUP does.",
)


@run.command("router")
@ROUTES_REQUIRED
@WATCH_OPTION
@CONFIG_OPTION
def run_router_command(routes_dir: Path, watch: bool, config_file: Path | None) -> None:
    """Route events to transformers and sinks until SIGTERM; SIGHUP reloads the routes."""
    settings = load_settings(None, config_file)
    logs.configure(settings.service.log_level, settings.service.mask_patterns)
    _run(run_router(settings, routes_dir, watch=watch))


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
    settings = load_settings(None, config_file)
    logs.configure(settings.service.log_level, settings.service.mask_patterns)
    _run(run_transformers(settings, list(pools), routes_dir, watch=watch))


@run.command("journal")
@CONFIG_OPTION
def run_journal_command(config_file: Path | None) -> None:
    """Store the hop records every process sends (journal.enabled) for esb trace, until
    SIGTERM: SQLite by default (journal.path), PostgreSQL with journal.backend postgres."""
    settings = load_settings(None, config_file)
    logs.configure(settings.service.log_level, settings.service.mask_patterns)
    _run(run_journal(settings))


@main.command()
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
    lines = _run(_trace(settings, event_id, correlation, key))
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


@main.group(cls=EsbGroup)
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
    click.echo(
        f"{routes_dir}: {len(table.routes)} routes, {len(table.sinks)} sinks, "
        f"{len(table.tests)} tests: valid"
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
    if event_file is not None:
        try:
            event = parse_structured(event_file.read_bytes())
        except OSError as exc:
            raise click.ClickException(f"cannot read {event_file}: {exc.strerror}") from None
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


@main.command()
@ROUTES_REQUIRED
@click.option(
    "--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="File to write.")
@CONFIG_OPTION
def catalog(routes_dir: Path, fmt: str, output: Path | None, config_file: Path | None) -> None:
    """Write an AsyncAPI 3.0 document of the whole bus from the route files."""
    settings = load_settings(None, config_file)
    document = build_catalog(load_routes(routes_dir), settings.broker, __version__)
    if fmt == "json":
        text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    else:
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text)
    click.echo(
        f"wrote {output}: {len(document['channels'])} channels, "
        f"{len(document['operations'])} operations"
    )


@main.group(cls=EsbGroup)
def dlq() -> None:
    """Inspect and re-drive parked messages (each work queue's .dlq)."""


DLQ_QUEUES = click.argument("queues", nargs=-1, metavar="[QUEUE]...")
DLQ_ROUTES = click.option(
    "--routes",
    "routes_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Every parking lot of this routes directory's queues.",
)


def _lots(settings: ProcessSettings, queues: tuple[str, ...], routes_dir: Path | None) -> list[str]:
    specs = _queue_specs(settings, queues, (), routes_dir)
    if not specs:
        raise click.UsageError("name a QUEUE (or its .dlq), or give --routes DIR")
    return list(dict.fromkeys(parking_lot(spec.name) for spec in specs))


async def _with_broker(settings: ProcessSettings, work: Callable[[Broker], Awaitable[Any]]) -> Any:
    broker = await _connected(settings, "esb-dlq")
    try:
        return await work(broker)
    finally:
        await broker.close()


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

    _run(_with_broker(settings, go))


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

    if not _run(_with_broker(settings, go)):
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

    total = _run(_with_broker(settings, go))
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

    found = _run(_with_broker(settings, counts))
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

    _run(_with_broker(settings, purge))


@main.group(cls=EsbGroup)
def new() -> None:
    """Start something new from a template."""


@new.command("adapter")
@click.argument("name")
@click.option(
    "--dir",
    "parent",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Where to create esb-NAME/.",
)
def new_adapter_command(name: str, parent: Path) -> None:
    """A package for adapter NAME: entry point, settings, a working source and sink, tests."""
    target = new_adapter(name, parent)
    click.echo(f"created {target}: cd {target} && pip install -e '.[dev]' && pytest")


async def _connected(settings: ProcessSettings, service: str) -> Broker:
    broker = Broker(settings.broker, service, Metrics())
    try:
        await broker.connect()
    except EsbError as exc:
        raise click.ClickException(
            f"{exc} (is RabbitMQ running? `make broker` starts one)"
        ) from None
    return broker


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


@main.command()
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

    async def go() -> None:
        broker = await _connected(settings, "esb-publish")
        try:
            await broker.publish(event)
        finally:
            await broker.close()

    _run(go())
    click.echo(f"published {event.id} ({event.type}), confirmed by the broker")


@main.group(cls=EsbGroup)
def topology() -> None:
    """The exchange and queues esb uses."""


QUEUE_OPTIONS = [
    click.option("--queue", "queues", multiple=True, help="A work queue (repeatable)."),
    click.option(
        "--bind",
        "bindings",
        multiple=True,
        help="Topic pattern for --queue on the events exchange (default: consume.bindings).",
    ),
    click.option(
        "--routes",
        "routes_dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Also every queue this routes directory needs (router, transformers, sinks).",
    ),
]


def _queue_specs(
    settings: ProcessSettings,
    queues: tuple[str, ...],
    bindings: tuple[str, ...],
    routes_dir: Path | None = None,
) -> list[QueueSpec]:
    names = list(queues) or ([settings.consume.queue] if settings.consume.queue else [])
    patterns = list(bindings) or settings.consume.bindings
    specs = [QueueSpec(name, patterns) for name in names]
    if routes_dir is not None:
        queue_names = QueueNames(settings.broker.prefix)
        specs.extend(routing_queues(load_routes(routes_dir), queue_names))
    return specs


@topology.command("declare")
@CONFIG_OPTION
@QUEUE_OPTIONS[0]
@QUEUE_OPTIONS[1]
@QUEUE_OPTIONS[2]
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
    specs = _queue_specs(settings, queues, bindings, routes_dir)
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

    async def go() -> None:
        broker = await _connected(settings, "esb-topology")
        try:
            channel = await broker.connection.channel()
            await declare_exchange(channel, settings.broker.exchange)
            for spec in specs:
                await declare_queue(channel, spec, broker_settings)
                retries = 0 if spec.name == names.unrouted else delays
                await declare_retry_queues(channel, spec.name, retries)
                bound = f"bound to {', '.join(spec.bindings)}" if spec.bindings else "not bound"
                extra = f", {retry_queue(spec.name, 1)}..{retries}" if retries else ""
                click.echo(f"queue {spec.name} (+ {dlq_name(spec.name)}{extra}) {bound}")
        finally:
            await broker.close()

    _run(go())
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
@QUEUE_OPTIONS[0]
@QUEUE_OPTIONS[2]
def topology_show(
    config_file: Path | None, queues: tuple[str, ...], routes_dir: Path | None
) -> None:
    """Show the exchange and the depth of each work queue and its parking lot."""
    settings = load_settings(None, config_file)
    specs = _queue_specs(settings, queues, (), routes_dir)

    async def go() -> None:
        broker = await _connected(settings, "esb-topology")
        try:
            click.echo(
                f"exchange {settings.broker.exchange} (topic) at {settings.broker.redacted_url()}"
            )
            for spec in specs:
                for name in (spec.name, dlq_name(spec.name)):
                    channel = await broker.connection.channel()
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                    except aiormq.exceptions.ChannelNotFoundEntity:
                        click.echo(f"queue {name}: not declared")
                        continue
                    depth = queue.declaration_result.message_count
                    consumers = queue.declaration_result.consumer_count
                    click.echo(f"queue {name}: {depth} ready, {consumers} consumers")
                    await channel.close()
        finally:
            await broker.close()

    _run(go())


@main.command()
@CONFIG_OPTION
@QUEUE_OPTIONS[0]
@QUEUE_OPTIONS[2]
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
    names = [spec.name for spec in _queue_specs(settings, queues, (), routes_dir)]
    if not names:
        raise click.UsageError("name the queues: --routes DIR or --queue Q")
    urls = [*metrics_urls, *_scrape_targets(targets_file)]

    async def sample(broker: Broker) -> Sample:
        levels = max(settings.retry.max_retries, MIN_RETRY_LEVELS)
        figures = [await queue_figures(broker.connection, name, levels) for name in names]
        return Sample(time.time(), figures, await process_figures(urls))

    async def go() -> None:
        broker = await _connected(settings, "esb-status")
        try:
            before = await sample(broker)
            while True:
                await asyncio.sleep(interval)
                after = await sample(broker)
                if watch:
                    click.clear()
                lines = render_status(before, after, with_metrics=bool(urls))
                if not urls:
                    lines.append("no /metrics given (--metrics URL or --targets FILE): no rates")
                click.echo("\n".join(lines))
                if not watch:
                    return
                before = after
        finally:
            await broker.close()

    with contextlib.suppress(KeyboardInterrupt):
        _run(go())


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


logging.getLogger("aiormq").addHandler(logging.NullHandler())


if __name__ == "__main__":
    main()
