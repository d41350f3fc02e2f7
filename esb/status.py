"""``esb status``: one terminal view of the bus, from what the broker and the processes say.

Depths and consumers come from the broker over AMQP (a passive declare per
queue: any user that may consume can ask). Rates, circuits and work in flight
come from the processes' ``/metrics``: a queue's rate out is how many
deliveries its consumers took (``esb_queue_wait_seconds_count``) over the
interval, its rate in that plus the change in its depth. The age of a parking
lot's oldest message is read from its head, which is put back untouched
(parking lots are classic queues: no delivery count). A source of figures that
does not answer is said in one line, and the rest is shown.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field

import aio_pika
import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from esb.broker import SENT_HEADER
from esb.circuit import State
from esb.retry import delay_queue
from esb.topology import dlq_name, queue_counts

#: Seconds a process's /metrics may take to answer.
METRICS_TIMEOUT = 2.0


@dataclass
class QueueFigures:
    """One work queue, its delay queues and its parking lot, as the broker has them now."""

    name: str
    depth: int | None  # None: not declared
    consumers: int = 0
    delayed: int = 0
    parked: int = 0
    oldest_parked: float | None = None  # seconds


@dataclass
class ProcessFigures:
    """What the processes' /metrics said: deliveries taken per queue, and each service's
    circuit and work in flight."""

    taken: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    circuits: dict[str, State] = field(default_factory=dict)
    in_flight: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


@dataclass
class Sample:
    at: float
    queues: list[QueueFigures]
    processes: ProcessFigures


async def queue_figures(
    connection: aio_pika.abc.AbstractConnection, queue: str, retry_levels: int
) -> QueueFigures:
    depth = await queue_counts(connection, queue)
    if depth is None:
        return QueueFigures(queue, None)
    figures = QueueFigures(queue, depth[0], depth[1])
    for level in range(1, retry_levels + 1):
        delayed = await queue_counts(connection, delay_queue(queue, level))
        if delayed is None:
            break
        figures.delayed += delayed[0]
    lot = await queue_counts(connection, dlq_name(queue))
    if lot is not None and lot[0]:
        figures.parked = lot[0]
        figures.oldest_parked = await _head_age(connection, dlq_name(queue))
    return figures


async def _head_age(connection: aio_pika.abc.AbstractConnection, queue: str) -> float | None:
    """Seconds since the head of ``queue`` was published (its ``x-esb-sent`` stamp); the
    message goes back where it was when the channel closes unacked."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        message = await declared.get(no_ack=False, fail=False, timeout=5)
    finally:
        await channel.close()
    sent = None if message is None else message.headers.get(SENT_HEADER)
    return max(0.0, time.time() - sent / 1000) if type(sent) is int else None


async def process_figures(urls: list[str]) -> ProcessFigures:
    figures = ProcessFigures()
    timeout = aiohttp.ClientTimeout(total=METRICS_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        texts = await asyncio.gather(*(_fetch(session, url) for url in urls))
    for url, text in zip(urls, texts, strict=True):
        if isinstance(text, Exception):
            figures.missing.append(f"{url}: {type(text).__name__}: {text}".rstrip(": "))
            continue
        try:
            _read_metrics(text, figures)
        except ValueError as exc:
            figures.missing.append(f"{url}: not Prometheus text ({exc})")
    return figures


async def _fetch(session: aiohttp.ClientSession, url: str) -> str | Exception:
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return RuntimeError(f"HTTP {response.status}")
            return await response.text()
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
        return exc


def _read_metrics(text: str, figures: ProcessFigures) -> None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "esb_queue_wait_seconds_count":
                figures.taken[labels.get("queue", "?")] += sample.value
            elif sample.name == "esb_circuit_state":
                figures.circuits[labels.get("service", "?")] = State(int(sample.value))
            elif sample.name == "esb_in_flight":
                service = labels.get("service", "?")
                figures.in_flight[service] = figures.in_flight.get(service, 0) + sample.value


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def render(before: Sample, after: Sample, with_metrics: bool) -> list[str]:
    """The table: a row per work queue, then each service's circuit, then what is missing."""
    seconds = max(1e-6, after.at - before.at)
    was = {q.name: q for q in before.queues}
    header = ("queue", "ready", "consumers", "in/s", "out/s", "delayed", "parked", "oldest parked")
    rows: list[tuple[str, ...]] = []
    for queue in after.queues:
        if queue.depth is None:
            rows.append((queue.name, "not declared", "", "", "", "", "", ""))
            continue
        out_rate = in_rate = None
        if with_metrics:
            taken = after.processes.taken.get(queue.name, 0.0)
            out_rate = (taken - before.processes.taken.get(queue.name, 0.0)) / seconds
            earlier = was.get(queue.name)
            if earlier is not None and earlier.depth is not None:
                in_rate = max(0.0, out_rate + (queue.depth - earlier.depth) / seconds)
        rows.append(
            (
                queue.name,
                f"{queue.depth:,}",
                str(queue.consumers),
                rate(in_rate),
                rate(out_rate),
                f"{queue.delayed:,}",
                f"{queue.parked:,}",
                age(queue.oldest_parked),
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        for r in (header, *rows)
    ]
    circuits = after.processes.circuits
    if circuits:
        lines.append("")
        for service in sorted(circuits):
            state = circuits[service].name.lower().replace("_", "-")
            flight = after.processes.in_flight.get(service, 0)
            lines.append(f"{service}: circuit {state}, {flight:,.0f} in flight")
    for missing in after.processes.missing:
        lines.append(f"no figures from {missing}")
    return lines
