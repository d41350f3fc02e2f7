"""The same 3-hop flow built three ways, side by side on one broker, in one run.

source -> router (keeps paid orders) -> transformer (renames customer_email to
email, makes ordered_at ISO 8601, validates a JSON Schema) -> sink, every hop
its own OS process, on:

- esb: ``esb run router`` and ``esb run transformer`` on bench/routes (the
  paid-orders route among nine others that do not match), the sink an esb
  ``Sink`` run by the SDK (bench/esb_sink.py), the source the SDK's emit path;
- esb (steps in router): the same route with ``runs_in: router``: router + sink;
- plain aio-pika (bench/plain_pipeline.py), the baseline;
- FastStream (bench/faststream_pipeline.py).

All: quorum queues, ~1 KiB persistent JSON orders, publisher confirms on every
publish, every input acked only after its output is confirmed. Rounds rotate
who goes first. Each run measures end-to-end msg/s at the maximum rate,
latency percentiles at paced rates (25/50/75% of esb's maximum and 250 msg/s),
CPU per message per process and for the broker, and peak RSS; a run that other
load on the machine disturbed is repeated. Prints one table of medians, writes
JSON and a PNG to bench/results/, and deletes every queue and exchange it made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import aiormq.exceptions
import cleanup
import orjson
import psutil
import yaml
from aiohttp import web
from pipeline_common import ARRIVAL, ROUTE, ROUTES_DIR, VALIDATORS, WINDOW

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PYTHON = sys.executable
ESB = shutil.which("esb", path=str(Path(sys.executable).parent)) or "esb"
HOPS = ("router", "transformer", "sink", "source", "journal")
FIXED_RATE = 250.0
#: The ratios the table and the round-by-round line print: esb against its peers, esb with
#: its steps in the router against plain's three hops, and what the journal costs esb.
RATIOS = (
    ("esb", "plain"),
    ("esb", "faststream"),
    ("esb-router", "plain"),
    ("esb-journal", "esb"),
    ("esb-records", "esb"),
    ("esb-otel", "esb"),
)
#: More tries for the run whose maximum sets the paced rates: a disturbed one would set
#: them all too low for every pipeline and round.
RATE_TRIES = 3


@dataclass(frozen=True)
class Pipeline:
    key: str
    label: str
    hops: tuple[str, ...]


PIPELINES = (
    Pipeline("esb", "esb", ("router", "transformer", "sink")),
    Pipeline("esb-router", "esb (steps in router)", ("router", "sink")),
    # esb with message tracking: every hop (the source too) writes its records, and the
    # journal process that stores them counts in the CPU.
    Pipeline("esb-journal", "esb + journal", ("router", "transformer", "sink", "journal")),
    # The same records with the journal process elsewhere (not started: its queue keeps
    # them): what tracking costs the flow itself, as where a shared journal runs on its own.
    Pipeline("esb-records", "esb + records", ("router", "transformer", "sink")),
    # esb with a span per hop exported over OTLP/HTTP (esb[otel]) to a receiver in the bench.
    Pipeline("esb-otel", "esb + OpenTelemetry", ("router", "transformer", "sink")),
    Pipeline("plain", "plain aio-pika", ("router", "transformer", "sink")),
    Pipeline("faststream", "FastStream", ("router", "transformer", "sink")),
)


class RunFailed(Exception):
    """A pipeline could not be measured in this run (it did not start or deliver)."""


class Disturbed(Exception):
    """Other load on the machine used ``cores`` while the maximum rate was measured."""

    def __init__(self, cores: float) -> None:
        super().__init__(f"others used {cores:.2f} cores")
        self.cores = cores


# ---------------------------------------------------------------- machine measurements


def busy_seconds() -> float:
    """CPU time the whole machine spent busy since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return math.nan
    return float(times.user + times.system)


def peak_rss_mb(pid: int) -> float:
    """The process's resident high-water mark (VmHWM): its peak since it started."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def broker_process(port: int) -> psutil.Process | None:
    """The RabbitMQ node (beam.smp) listening on ``port``; others may run private nodes."""
    for conn in psutil.net_connections(kind="tcp"):
        listening = conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        if listening and conn.pid is not None:
            return psutil.Process(conn.pid)
    beams = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "beam.smp"]
    return min(beams, key=lambda p: p.create_time()) if beams else None


@dataclass
class Snapshot:
    at: float
    busy: float
    ours: dict[str, float]
    broker: float
    driver: float


class Meter:
    """CPU of the pipeline's processes, the broker, the driver and the whole machine."""

    def __init__(self, processes: dict[str, psutil.Process], broker: psutil.Process | None):
        self.processes = processes
        self.broker = broker
        self.driver = psutil.Process()

    def snapshot(self) -> Snapshot:
        return Snapshot(
            at=time.monotonic(),
            busy=busy_seconds(),
            ours={hop: cpu_seconds(p) for hop, p in self.processes.items()},
            broker=cpu_seconds(self.broker) if self.broker else math.nan,
            driver=cpu_seconds(self.driver),
        )


@dataclass
class Usage:
    """What happened between two snapshots."""

    wall: float
    hops: dict[str, float]
    broker: float
    others: float

    @classmethod
    def between(cls, a: Snapshot, b: Snapshot) -> Usage:
        hops = {hop: b.ours[hop] - a.ours[hop] for hop in a.ours}
        broker = b.broker - a.broker
        ours = sum(hops.values()) + (broker if not math.isnan(broker) else 0) + b.driver - a.driver
        return cls(b.at - a.at, hops, broker, max(0.0, (b.busy - a.busy) - ours))


async def quiet(threshold: float, patience: float) -> float:
    """Wait (up to ``patience`` s) for a second in which the machine is nearly idle.

    Returns the cores busy in the last second sampled; the bench's idle
    processes and the broker count, so this is an upper bound on others' load.
    """
    deadline = time.monotonic() + patience
    while True:
        before = busy_seconds()
        await asyncio.sleep(1.0)
        load = busy_seconds() - before
        if load <= threshold or time.monotonic() >= deadline:
            return load


# ---------------------------------------------------------------- arrivals from the sink


class Arrivals(asyncio.Protocol):
    """Reads the sink's arrival records; keeps the first arrival of each order."""

    def __init__(self) -> None:
        self.times: dict[int, int] = {}
        self.pending = b""
        self.window = range(0)
        self.missing = 0
        self.complete = asyncio.Event()

    def expect(self, first: int, count: int) -> None:
        self.window = range(first, first + count)
        self.missing = sum(1 for seq in self.window if seq not in self.times)
        self.complete.clear()
        if self.missing == 0:
            self.complete.set()

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        whole = len(data) - len(data) % ARRIVAL.size
        self.pending = data[whole:]
        for seq, at in ARRIVAL.iter_unpack(data[:whole]):
            if seq in self.times:
                continue
            self.times[seq] = at
            if seq in self.window:
                self.missing -= 1
                if self.missing == 0:
                    self.complete.set()

    async def wait(self, within: float) -> bool:
        try:
            await asyncio.wait_for(self.complete.wait(), within)
        except TimeoutError:
            return False
        return True


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Hop:
    name: str
    process: asyncio.subprocess.Process
    log: Path
    health_port: int | None = None


@dataclass
class Run:
    """One pipeline's processes for one round, under a prefix of their own."""

    pipeline: Pipeline
    prefix: str
    url: str
    workdir: Path
    hops: list[Hop] = field(default_factory=list)
    source: asyncio.subprocess.Process | None = None
    arrivals: Arrivals = field(default_factory=Arrivals)
    read_fd: int = -1
    otlp: OtlpReceiver | None = None

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.events"

    def esb_env(self, service: str | None = None) -> dict[str, str]:
        env = {
            "ESB_BROKER__URL": self.url,
            "ESB_BROKER__EXCHANGE": self.exchange,
            "ESB_BROKER__PREFIX": self.prefix,
            "ESB_BROKER__PREFETCH": "64",
            "ESB_SERVICE__HEALTH_HOST": "127.0.0.1",
        }
        if service is not None:
            env["ESB_SERVICE__NAME"] = service
        if self.pipeline.key in ("esb-journal", "esb-records"):
            env["ESB_JOURNAL__ENABLED"] = "true"
            env["ESB_JOURNAL__PATH"] = str(self.journal_path)
        if self.otlp is not None:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{self.otlp.port}"
        return env

    @property
    def journal_path(self) -> Path:
        """This run's own journal file: rounds share the work directory."""
        return self.workdir / f"{self.prefix}.journal.sqlite3"

    def routes_dir(self) -> Path:
        """The bench's route file, with the paid-orders route's steps in the router if asked."""
        if self.pipeline.key != "esb-router":
            return ROUTES_DIR
        doc = yaml.safe_load((ROUTES_DIR / "orders.yaml").read_text())
        for route in doc["routes"]:
            if route["name"] == ROUTE:
                route["runs_in"] = "router"
        directory = self.workdir / "routes"
        directory.mkdir(exist_ok=True)
        (directory / "orders.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        return directory

    async def spawn(
        self, name: str, argv: list[str], env: dict[str, str], *, sink: bool = False
    ) -> Hop:
        log = self.workdir / f"{self.pipeline.key}-{name}.log"
        full_env = {**os.environ, "BENCH_AMQP_URL": self.url, "BENCH_PREFIX": self.prefix, **env}
        health_port = None
        if "ESB_BROKER__URL" in env:
            health_port = free_port()
            full_env["ESB_SERVICE__HEALTH_PORT"] = str(health_port)
        pass_fds: tuple[int, ...] = ()
        if sink:
            read_fd, write_fd = os.pipe()
            self.read_fd = read_fd
            full_env["BENCH_ARRIVALS_FD"] = full_env["ESB_ADAPTER__ARRIVALS_FD"] = str(write_fd)
            pass_fds = (write_fd,)
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=full_env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                pass_fds=pass_fds,
                cwd=BENCH,
            )
        if sink:
            os.close(int(full_env["BENCH_ARRIVALS_FD"]))
            loop = asyncio.get_running_loop()
            await loop.connect_read_pipe(lambda: self.arrivals, os.fdopen(self.read_fd, "rb"))
        hop = Hop(name, process, log, health_port)
        self.hops.append(hop)
        return hop

    async def start(self) -> None:
        """Start the hops from the sink up, each once the one before consumes.

        One at a time: RabbitMQ 3.10 can fail a consume on a quorum queue that another
        connection declared the same moment (``noproc``), which a hop's start would hit.
        """
        key = self.pipeline.key
        if key == "esb-otel":
            self.otlp = OtlpReceiver()
            await self.otlp.start()
        if key.startswith("esb"):
            routes = str(self.routes_dir())
            commands = {
                "sink": [PYTHON, str(BENCH / "esb_sink.py")],
                "transformer": [ESB, "run", "transformer", "--routes", routes],
                "router": [ESB, "run", "router", "--routes", routes],
                "journal": [ESB, "run", "journal"],
            }
            for name in ("journal", "sink", "transformer", "router"):
                if name in self.pipeline.hops:
                    env = self.esb_env("fulfilment" if name == "sink" else None)
                    await self.ready(
                        await self.spawn(name, commands[name], env, sink=name == "sink")
                    )
            source_env = self.esb_env("bench-source")
        else:
            script = str(BENCH / f"{key}_pipeline.py")
            for name in ("sink", "transformer", "router"):
                await self.ready(
                    await self.spawn(name, [PYTHON, script, name], {}, sink=name == "sink")
                )
            source_env = {}
        self.source = await asyncio.create_subprocess_exec(
            PYTHON,
            str(BENCH / "pipeline_source.py"),
            "faststream" if key == "faststream" else "plain" if key == "plain" else "esb",
            env={**os.environ, "BENCH_AMQP_URL": self.url, "BENCH_PREFIX": self.prefix}
            | source_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(self.workdir / f"{key}-source.log").open("wb"),
            cwd=BENCH,
        )
        answer = await self.read_source(60)
        if not answer.get("ready"):
            raise RunFailed(f"the source did not start: {answer}")

    def check_alive(self) -> None:
        for hop in self.hops:
            if hop.process.returncode is not None:
                lines = tail(hop.log)
                raise RunFailed(
                    f"{self.pipeline.label} {hop.name} exited ({hop.process.returncode}): "
                    f"{lines.splitlines()[-1].strip() if lines else ''}\n{lines}"
                )

    async def ready(self, hop: Hop, within: float = 60) -> None:
        """Wait until ``hop`` consumes: esb's /readyz, else a consumer on its input queue."""
        deadline = time.monotonic() + within
        while not await self.consuming(hop):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RunFailed(f"{self.pipeline.label} {hop.name} not ready after {within:.0f}s")
            await asyncio.sleep(0.25)

    async def consuming(self, hop: Hop) -> bool:
        if hop.health_port is not None:
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{hop.health_port}/readyz") as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False
        name = f"{self.prefix}.{'transform' if hop.name == 'transformer' else hop.name}"
        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return False
            return bool(queue.declaration_result.consumer_count)

    async def read_source(self, within: float) -> dict[str, Any]:
        if self.source is None or self.source.stdout is None:
            raise RunFailed("the source is not running")
        try:
            line = await asyncio.wait_for(self.source.stdout.readline(), within)
        except TimeoutError:
            raise RunFailed(f"the source did not answer within {within:.0f}s") from None
        if not line:
            raise RunFailed(
                "the source exited:\n" + tail(self.workdir / f"{self.pipeline.key}-source.log")
            )
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    async def command(self, within: float, **command: Any) -> dict[str, Any]:
        if self.source is None or self.source.stdin is None:
            raise RunFailed("the source is not running")
        self.source.stdin.write(orjson.dumps(command) + b"\n")
        await self.source.stdin.drain()
        return await self.read_source(within)

    def psutil_processes(self) -> dict[str, psutil.Process]:
        found = {hop.name: psutil.Process(hop.process.pid) for hop in self.hops}
        if self.source is not None:
            found["source"] = psutil.Process(self.source.pid)
        return found

    async def stop(self) -> None:
        processes = [hop.process for hop in self.hops]
        if self.source is not None:
            if self.source.stdin is not None:
                self.source.stdin.close()
            processes.append(self.source)
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self.otlp is not None:
            await self.otlp.stop()


class OtlpReceiver:
    """Where esb-otel's processes export spans: answers OTLP/HTTP as a collector would, and
    counts what it got without decoding it (its CPU is the bench's, not the pipeline's)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests = 0
        self.bytes = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def traces(request: web.Request) -> web.Response:
            self.bytes += len(await request.read())
            self.requests += 1
            return web.Response(status=200, content_type="application/x-protobuf")

        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line[:300] for line in text[-lines:])


# ---------------------------------------------------------------- one run


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return math.nan
    return values[max(0, math.ceil(q * len(values)) - 1)]


@dataclass
class Settings:
    count: int
    warmup: int
    seconds: float
    noise_cores: float
    repeats: int


class Sequence:
    """Order numbers never repeat within a bench run, so a late arrival cannot be miscounted."""

    def __init__(self) -> None:
        self.next = 1

    def take(self, count: int) -> int:
        first, self.next = self.next, self.next + count
        return first


async def measure(
    run: Run,
    settings: Settings,
    paced_rates: Callable[[Pipeline, float, bool], list[float]],
    broker: psutil.Process | None,
    *,
    give_up: bool,
) -> dict[str, Any]:
    """Warm up, then the maximum rate, then each paced rate; the run's figures.

    ``paced_rates`` gets the pipeline, its maximum and whether other load disturbed that
    measurement, and says which rates to pace at. With ``give_up``, a disturbed maximum
    raises :class:`Disturbed` instead.
    """
    seq = Sequence()
    started = time.monotonic()
    await run.start()
    startup = time.monotonic() - started
    meter = Meter(run.psutil_processes(), broker)
    first = seq.take(settings.warmup)
    run.arrivals.expect(first, settings.warmup)
    await run.command(120, first=first, count=settings.warmup)
    if not await run.arrivals.wait(30):
        run.check_alive()
        raise RunFailed(
            f"{run.arrivals.missing} of {settings.warmup} warm-up orders did not reach the sink "
            f"within 30 s{await where_they_wait(run.prefix)}"
        )

    result: dict[str, Any] = {"startup_seconds": startup}
    first = seq.take(settings.count)
    run.arrivals.expect(first, settings.count)
    before = meter.snapshot()
    answer = await run.command(600, first=first, count=settings.count)
    if not await run.arrivals.wait(max(60.0, settings.count / 20)):
        raise RunFailed(f"{run.arrivals.missing} orders missing at the maximum rate")
    after = meter.snapshot()
    last = max(run.arrivals.times[s] for s in range(first, first + settings.count))
    usage = Usage.between(before, after)
    result["max"] = {
        "count": settings.count,
        "msg_per_s": settings.count / ((last - answer["t0"]) / 1e9),
        "cpu_us_per_msg": {
            hop: seconds / settings.count * 1e6 for hop, seconds in usage.hops.items()
        },
        "broker_cpu_us_per_msg": usage.broker / settings.count * 1e6,
        "peak_rss_mb": {hop: peak_rss_mb(p.pid) for hop, p in meter.processes.items()},
    }
    usages = [usage]
    result["latency"] = []
    disturbed = usage.others / usage.wall > settings.noise_cores
    if disturbed and give_up:
        raise Disturbed(usage.others / usage.wall)
    for rate in paced_rates(run.pipeline, result["max"]["msg_per_s"], disturbed):
        count = max(1, round(rate * settings.seconds))
        first = seq.take(count)
        run.arrivals.expect(first, count)
        before = meter.snapshot()
        answer = await run.command(settings.seconds * 10 + 60, first=first, count=count, rate=rate)
        arrived = await run.arrivals.wait(settings.seconds * 3 + 30)
        after = meter.snapshot()
        paced = Usage.between(before, after)
        usages.append(paced)
        latencies = sorted(
            (run.arrivals.times[first + i] - (answer["t0"] + i * 1e9 / rate)) / 1e6
            for i in range(count)
            if first + i in run.arrivals.times
        )
        last = max(
            (run.arrivals.times[s] for s in range(first, first + count) if s in run.arrivals.times),
            default=answer["t0"],
        )
        result["latency"].append(
            {
                "offered": rate,
                "count": count,
                "arrived": len(latencies),
                "achieved": len(latencies) / max(1e-9, (last - answer["t0"]) / 1e9),
                "p50_ms": percentile(latencies, 0.50),
                "p95_ms": percentile(latencies, 0.95),
                "p99_ms": percentile(latencies, 0.99),
                "max_ms": latencies[-1] if latencies else math.nan,
                "source_late_ms": answer["late_ms"],
                "complete": arrived,
                "python_cpu_us_per_msg": sum(paced.hops.values()) / count * 1e6,
                "broker_cpu_us_per_msg": paced.broker / count * 1e6,
            }
        )
    result["peak_rss_mb_whole_run"] = {
        hop: peak_rss_mb(p.pid) for hop, p in meter.processes.items()
    }
    wall = sum(u.wall for u in usages)
    result["others_cores"] = sum(u.others for u in usages) / wall
    result["broker_cores"] = sum(u.broker for u in usages) / wall
    if run.pipeline.key == "esb-journal":
        result["journal"] = await journal_records(run.journal_path, seq.next - 1)
    if run.pipeline.key == "esb-records":
        result["journal_queue"] = await journal_queue(run.url, run.prefix)
    if run.otlp is not None:
        await asyncio.sleep(1.0)  # the last batch of spans (OTEL_BSP_SCHEDULE_DELAY)
        result["otel"] = {"requests": run.otlp.requests, "bytes": run.otlp.bytes}
    return result


async def journal_records(path: Path, orders: int) -> dict[str, float]:
    """What the journal stored of the run: proof that its cost was paid (a record from the
    source and from each hop per order). Records flush every 0.5 s: the last are awaited."""
    stored = 0
    for _ in range(20):
        await asyncio.sleep(0.25)
        with contextlib.closing(sqlite3.connect(path)) as db:
            now = int(db.execute("SELECT count(*) FROM esb_hops").fetchone()[0])
        if now == stored and now >= 4 * orders:
            break
        stored = now
    return {"records": stored, "per_order": stored / max(1, orders)}


async def journal_queue(url: str, prefix: str) -> dict[str, int]:
    """What waits in the journal queue of a run without a journal process: proof that the
    hops sent their records (a message per flush per process, up to 1,000 records each)."""
    await asyncio.sleep(1.0)  # the last flush
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{prefix}.journal", passive=True)
        return {"messages": queue.declaration_result.message_count or 0}


async def where_they_wait(prefix: str) -> str:
    """Which of the run's queues hold messages: where a pipeline's messages got stuck."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return ""
    listing = await asyncio.create_subprocess_exec(
        ctl,
        "-q",
        "--no-table-headers",
        "list_queues",
        "name",
        "messages",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    out, _ = await listing.communicate()
    held = [
        f"{name} holds {depth}"
        for name, depth in (line.split() for line in out.decode().splitlines() if line.strip())
        if name.startswith(prefix) and depth != "0"
    ]
    return f" ({', '.join(held)})" if held else ""


# ---------------------------------------------------------------- rounds and summary


@dataclass
class Bench:
    url: str
    run_id: str
    settings: Settings
    pipelines: list[Pipeline]
    rates: list[float] | None
    workdir: Path
    broker: psutil.Process | None
    repeats_left: int = 0
    rates_settled: bool = False
    rate_notes: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def paced_rates(self, pipeline: Pipeline, maximum: float, disturbed: bool) -> list[float]:
        """25/50/75% of esb's maximum in its first run (the first run's, without esb) and 250.

        A repeat of that run whose maximum was not disturbed fixes them again.
        """
        if not self.rates_settled and (pipeline.key == "esb" or "esb" not in self.keys):
            self.rates = [round(maximum * f) for f in (0.25, 0.5, 0.75)] + [FIXED_RATE]
            self.rate_notes = ["25% of esb max", "50% of esb max", "75% of esb max", "fixed"]
            self.rates_settled = not disturbed
            print(
                f"  paced rates: {', '.join(f'{r:g}' for r in self.rates)} msg/s "
                f"(25/50/75% of {pipeline.label}'s {maximum:,.0f} msg/s, and {FIXED_RATE:g})",
                flush=True,
            )
        return self.rates or []

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.pipelines]

    async def one(self, pipeline: Pipeline, round_number: int) -> dict[str, Any] | None:
        """Measure ``pipeline`` once in this round; the least disturbed complete attempt counts.

        A run that other load disturbed is repeated, bounded per run and in all, after
        waiting for the machine to calm down; one disturbed already at the maximum rate
        stops there, saving its paced rates, unless it is the last try. The run that sets
        the paced rates has RATE_TRIES more tries to find an undisturbed maximum.
        """
        attempts: list[dict[str, Any]] = []
        sets_rates = not self.rates_settled and (pipeline.key == "esb" or "esb" not in self.keys)
        tries = self.settings.repeats + (RATE_TRIES if sets_rates else 0)
        for attempt in range(tries + 1):
            last_try = attempt == tries or (self.repeats_left == 0 and not sets_rates)
            idle = await quiet(self.settings.noise_cores, patience=20 if attempt == 0 else 30)
            prefix = f"{self.run_id}-{pipeline.key}-r{round_number}a{attempt}"
            run = Run(pipeline, prefix, self.url, self.workdir)
            started = time.monotonic()
            try:
                figures = await measure(
                    run, self.settings, self.paced_rates, self.broker, give_up=not last_try
                )
            except Disturbed as exc:
                print(
                    f"  {pipeline.label:<22} others used {exc.cores:.2f} cores during the "
                    "maximum rate -> DISTURBED, stopped there and repeated",
                    flush=True,
                )
                self.repeats_left -= 0 if sets_rates else 1
                continue
            except RunFailed as exc:
                self.failed[pipeline.key] = str(exc)
                print(f"  {pipeline.label}: FAILED: {exc}", flush=True)
                break
            finally:
                await run.stop()
                guessed = [] if cleanup.listable() else guesses(prefix)
                await cleanup.remove(self.url, prefix, guessed, [run.exchange], check=False)
            figures |= {
                "pipeline": pipeline.key,
                "round": round_number,
                "attempt": attempt,
                "idle_load_before": idle,
                "seconds": time.monotonic() - started,
            }
            figures["disturbed"] = figures["others_cores"] > self.settings.noise_cores
            attempts.append(figures)
            self.runs.append(figures)
            print(
                f"  {pipeline.label:<22} {figures['max']['msg_per_s']:7,.0f} msg/s at max; "
                + "; ".join(
                    f"{lat['offered']:.0f}/s p99 {lat['p99_ms']:.1f} ms"
                    for lat in figures["latency"]
                )
                + f"; others used {figures['others_cores']:.2f} cores"
                + (
                    f"; journal stored {figures['journal']['records']:,} hop records "
                    f"({figures['journal']['per_order']:.1f} an order)"
                    if "journal" in figures
                    else ""
                )
                + (
                    f"; {figures['journal_queue']['messages']:,} journal messages waiting"
                    if "journal_queue" in figures
                    else ""
                )
                + (
                    f"; spans exported: {figures['otel']['bytes'] / 1e6:,.1f} MB in "
                    f"{figures['otel']['requests']:,} OTLP requests"
                    if "otel" in figures
                    else ""
                )
                + (" -> DISTURBED" if figures["disturbed"] else ""),
                flush=True,
            )
            if not figures["disturbed"] or last_try:
                break
            self.repeats_left -= 1
        self.rates_settled = self.rates is not None
        comparable = [a for a in attempts if [p["offered"] for p in a["latency"]] == self.rates]
        if not comparable:
            return None
        best = min(comparable, key=lambda f: f["others_cores"])
        best["counted"] = True
        return best


def guesses(prefix: str) -> list[str]:
    """Every queue a run under ``prefix`` may declare, for a broker whose list cannot be read:
    each hop's work queue (esb's, plain's, FastStream's), its parking lot and delay queues."""
    sinks = yaml.safe_load((ROUTES_DIR / "orders.yaml").read_text())["sinks"]
    hops = ["router", "unrouted", "transform", "transform.router", "sink", "journal"]
    work = [f"{prefix}.{hop}" for hop in hops] + [f"{prefix}.sink.{sink}" for sink in sinks]
    suffixes = ["", ".dlq", *(f".delay.{n}" for n in range(1, 31))]
    return [queue + suffix for queue in work for suffix in suffixes]


def rotation(pipelines: list[Pipeline], round_number: int) -> list[Pipeline]:
    shift = round_number % len(pipelines)
    return pipelines[shift:] + pipelines[:shift]


def median_of(values: Iterator[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


def summarize(runs: list[dict[str, Any]], pipelines: list[Pipeline]) -> dict[str, Any]:
    """Per pipeline, the median of every figure over its counted runs."""
    summary: dict[str, Any] = {}
    for pipeline in pipelines:
        counted = [r for r in runs if r["pipeline"] == pipeline.key and r.get("counted")]
        if not counted:
            continue
        hops = [*pipeline.hops, "source"]
        figures: dict[str, Any] = {
            "runs": len(counted),
            "disturbed_runs_counted": sum(1 for r in counted if r["disturbed"]),
            "others_cores": median_of(r["others_cores"] for r in counted),
            "msg_per_s": median_of(r["max"]["msg_per_s"] for r in counted),
            "cpu_us_per_msg": {
                hop: median_of(r["max"]["cpu_us_per_msg"][hop] for r in counted) for hop in hops
            },
            "python_cpu_us_per_msg": median_of(
                sum(r["max"]["cpu_us_per_msg"].values()) for r in counted
            ),
            "broker_cpu_us_per_msg": median_of(r["max"]["broker_cpu_us_per_msg"] for r in counted),
            "peak_rss_mb": {
                hop: median_of(r["max"]["peak_rss_mb"][hop] for r in counted) for hop in hops
            },
            "latency": [],
        }
        for index, point in enumerate(counted[0]["latency"]):
            figures["latency"].append(
                {
                    "offered": point["offered"],
                    **{
                        key: median_of(r["latency"][index][key] for r in counted)
                        for key in (
                            "achieved",
                            "p50_ms",
                            "p95_ms",
                            "p99_ms",
                            "max_ms",
                            "python_cpu_us_per_msg",
                            "broker_cpu_us_per_msg",
                        )
                    },
                    "complete": all(r["latency"][index]["complete"] for r in counted),
                }
            )
        summary[pipeline.key] = figures
    return summary


def fmt(value: float, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.1f}" if value < 10 else f"{value:,.0f}"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"{a / b:.2f}"


def short(key: str) -> str:
    """A pipeline's key as a ratio column names it."""
    for long, brief in (("-router", "-rtr"), ("-journal", "-jrn"), ("-records", "-rec")):
        key = key.replace(long, brief)
    return key.replace("faststream", "FS")


def table(summary: dict[str, Any], pipelines: list[Pipeline], notes: list[str]) -> str:
    """One table: a column per pipeline, then esb/plain, esb/FastStream, esb-router/plain.

    ``notes`` say what each paced rate is (``25% of esb max``).
    """
    present = [p for p in pipelines if p.key in summary]
    ratios = RATIOS
    header = [
        "",
        *(p.label for p in present),
        *(f"{short(a)}/{short(b)}" for a, b in ratios),
    ]
    rows: list[list[str]] = []

    def get(key: str, path: tuple[Any, ...]) -> float:
        value: Any = summary.get(key)
        for part in path:
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and part < len(value):
                value = value[part]
            else:
                return math.nan
        return math.nan if value is None else float(value)

    def row(label: str, path: tuple[Any, ...], show: Any = fmt, compare: bool = True) -> None:
        values = [show(get(p.key, path)) for p in present]
        compared = [ratio(get(a, path), get(b, path)) if compare else "" for a, b in ratios]
        rows.append([label, *values, *compared])

    row("end-to-end msg/s at max rate", ("msg_per_s",))
    row("Python CPU us/msg, all processes", ("python_cpu_us_per_msg",))
    for hop in HOPS:
        row(f"  {hop} CPU us/msg", ("cpu_us_per_msg", hop))
    row("broker CPU us/msg", ("broker_cpu_us_per_msg",))
    any_latency = max((figures["latency"] for figures in summary.values()), key=len)
    for index, point in enumerate(any_latency):
        offered = point["offered"]
        note = f" ({notes[index]})" if index < len(notes) else ""
        label = f"p50/p95/p99 ms at {offered:,.0f}/s{note}"
        values = []
        for p in present:
            points = summary[p.key]["latency"]
            lat = points[index] if index < len(points) else None
            if lat is None:
                values.append("-")
                continue
            mark = "" if lat["achieved"] >= 0.97 * offered and lat["complete"] else " (sat.)"
            values.append(f"{ms(lat['p50_ms'])}/{ms(lat['p95_ms'])}/{ms(lat['p99_ms'])}{mark}")
        path = ("latency", index, "p99_ms")
        rows.append([label, *values, *(ratio(get(a, path), get(b, path)) for a, b in ratios)])
    for index, point in enumerate(any_latency):
        label = f"Python + broker CPU us/msg at {point['offered']:,.0f}/s"
        values = []
        for p in present:
            points = summary[p.key]["latency"]
            lat = points[index] if index < len(points) else {}
            values.append(
                f"{fmt(lat.get('python_cpu_us_per_msg', math.nan))} + "
                f"{fmt(lat.get('broker_cpu_us_per_msg', math.nan))}"
            )
        rows.append([label, *values, *("" for _ in ratios)])
    for hop in HOPS:
        row(f"peak RSS MB, {hop}", ("peak_rss_mb", hop), lambda v: fmt(v, 0))
    row("others' load during the runs (cores)", ("others_cores",), lambda v: fmt(v, 2), False)
    rows.append(
        [
            "runs counted (of them disturbed)",
            *(
                f"{summary[p.key]['runs']} ({summary[p.key]['disturbed_runs_counted']})"
                for p in present
            ),
            *("" for _ in ratios),
        ]
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        )
        for line in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def round_ratios(runs: list[dict[str, Any]]) -> str:
    """The maximum-rate ratios of each round, from runs a minute or two apart: this machine's
    speed drifts between rounds, so a ratio of medians can pair a fast round with a slow one."""
    rates: dict[int, dict[str, float]] = {}
    for run in runs:
        if run.get("counted"):
            rates.setdefault(run["round"], {})[run["pipeline"]] = run["max"]["msg_per_s"]
    parts = []
    for a, b in RATIOS:
        each = [r[a] / r[b] for _, r in sorted(rates.items()) if a in r and b in r and r[b]]
        if each:
            listed = ", ".join(f"{value:.2f}" for value in each)
            parts.append(f"{a}/{b} {listed} (median {statistics.median(each):.2f})")
    return "max-rate ratios round by round: " + "; ".join(parts) if parts else ""


def plot(summary: dict[str, Any], pipelines: list[Pipeline], path: Path) -> None:
    """Latency percentiles against offered rate, one colour per pipeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5))
    styles = {"p50_ms": ":", "p95_ms": "--", "p99_ms": "-"}
    for colour, pipeline in zip(
        ("tab:blue", "tab:purple", "tab:green", "tab:orange"), pipelines, strict=False
    ):
        figures = summary.get(pipeline.key)
        if not figures or not figures["latency"]:
            continue
        points = sorted(figures["latency"], key=lambda p: p["offered"])
        for key, style in styles.items():
            axes.plot(
                [p["offered"] for p in points],
                [p[key] for p in points],
                style,
                marker="o",
                color=colour,
                label=f"{pipeline.label} {key.removesuffix('_ms')}",
            )
    axes.set_yscale("log")
    axes.set_xlabel("offered rate (msg/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title("Paid orders: latency from source publish to sink receipt (medians of rounds)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


SEMANTICS = """\
Same in all: quorum queues, persistent ~1 KiB JSON orders, publisher confirms on every publish
(many in flight), every input acked only after its output is confirmed, prefetch 64 per
consumer, source window 256. What differs:
- esb checks each CloudEvent envelope, carries ids, a routing slip and ce- attributes in headers,
  derives a new event per hop, declares delay queues and parking lots and keeps metrics; the
  bench sink declares itself naturally idempotent (no idempotency store), as an upsert by id is.
- plain aio-pika: the router forwards the body as it came; a failure is rejected into the
  queue's .dlq (no retries with backoff, no envelope, no metrics).
- FastStream: decodes and re-encodes the JSON body at every hop; a failure is rejected into the
  queue's .dlq; its two INFO log lines per message are set to DEBUG (not written).
- Validation: esb checks with jsonschema-rs first when the schema allows, plain and FastStream
  with {validator} (--validator)."""


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], capture_output=True, text=True, cwd=BENCH, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return ""
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "esb_uncommitted_files": git("status", "--short", "--", "esb").splitlines(),
    }


async def main(args: argparse.Namespace) -> int:
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    settings = Settings(args.count, args.warmup, args.seconds, args.noise_cores, args.repeats)
    chosen = [p for p in PIPELINES if p.key in args.pipelines]
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    os.environ["BENCH_VALIDATOR"] = args.validator
    before = cleanup.leftovers("bench-")
    print(
        f"pipeline bench {run_id}: {args.rounds} round(s) of {', '.join(p.label for p in chosen)}; "
        f"{args.count} orders at max rate, {args.seconds:g} s per paced rate, "
        f"window {WINDOW}, prefetch 64; queues under 'bench-' before: "
        f"{'unknown' if before is None else len(before)}",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        workdir = args.logs or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        bench = Bench(
            url,
            run_id,
            settings,
            chosen,
            args.rates,
            workdir,
            broker_process(int(os.environ.get("BENCH_BROKER_PORT", "5672"))),
            repeats_left=args.max_repeats,
            rates_settled=args.rates is not None,
        )
        try:
            await rounds(bench, args.rounds)
        finally:
            leftover = await cleanup.remove(url, run_id)
            if leftover:
                print(f"left on the broker: {leftover}", file=sys.stderr)
    after = cleanup.leftovers("bench-")
    summary = summarize(bench.runs, chosen)
    if not summary:
        print("no pipeline could be measured", file=sys.stderr)
        return 1
    print()
    print(table(summary, chosen, bench.rate_notes))
    print(
        "ratios are esb's figure over the other's: above 1 is faster for msg/s, costlier for "
        "CPU, RSS and latency (p99 for the latency rows); (sat.) = the pipeline did not keep up"
    )
    if by_round := round_ratios(bench.runs):
        print(by_round)
    print(SEMANTICS.format(validator=args.validator))
    for key, reason in bench.failed.items():
        print(f"{key}: not measured in every round: {reason.splitlines()[0]}")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = RESULTS / f"pipeline-{stamp}.json"
    png_path = RESULTS / f"pipeline-{stamp}.png"
    json_path.write_text(
        json.dumps(
            {
                "run_id": run_id,
                "settings": vars(args),
                "semantics": SEMANTICS.format(validator=args.validator),
                "rates": bench.rates,
                "machine": {
                    "cpus": os.cpu_count(),
                    "git": git_state(),
                    "pythonpath": os.environ.get("PYTHONPATH", ""),
                },
                "failed": bench.failed,
                "runs": bench.runs,
                "summary": summary,
            },
            indent=1,
            default=str,
        )
    )
    plot(summary, chosen, png_path)
    print(f"results: {json_path.relative_to(BENCH.parent)}, {png_path.relative_to(BENCH.parent)}")
    print(
        f"queues and exchanges under 'bench-' after: {'unknown' if after is None else len(after)}"
        + (f" {after}" if after else "")
    )
    return 0


async def rounds(bench: Bench, count: int) -> None:
    for round_number in range(1, count + 1):
        turn = rotation(bench.pipelines, round_number - 1)
        print(f"round {round_number}: {', '.join(p.label for p in turn)}", flush=True)
        for pipeline in turn:
            if pipeline.key in bench.failed and pipeline.key == "esb-router":
                continue
            await bench.one(pipeline, round_number)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=5000, help="orders at the maximum rate")
    parser.add_argument("--seconds", type=float, default=5.0, help="per paced rate")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument(
        "--rates",
        type=lambda s: [float(v) for v in s.split(",")],
        default=None,
        help="paced rates (msg/s, comma-separated) instead of 25/50/75%% of esb's max and 250",
    )
    parser.add_argument(
        "--pipelines",
        type=lambda s: s.split(","),
        default=[p.key for p in PIPELINES],
        help="comma-separated subset of: " + ", ".join(p.key for p in PIPELINES),
    )
    parser.add_argument(
        "--noise-cores",
        type=float,
        default=0.25,
        help="others' CPU (cores, averaged over a run) above which a run is repeated",
    )
    parser.add_argument(
        "--validator",
        choices=VALIDATORS,
        default="jsonschema",
        help="what the plain and FastStream transformers validate with (esb uses its own)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="repeats of one disturbed run")
    parser.add_argument(
        "--max-repeats", type=int, default=6, help="repeats of disturbed runs in all, a time bound"
    )
    parser.add_argument(
        "--logs", type=Path, default=None, help="keep the processes' logs in this directory"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run: 1 round, 600 orders, 1 s rates"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.count, args.seconds, args.warmup = 1, 600, 1.0, 100
    return args


async def interruptible(args: argparse.Namespace) -> int:
    """``main``, stopped by SIGTERM as by Ctrl-C: processes ended and queues deleted either way."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await main(args)
    except asyncio.CancelledError:
        print("interrupted: its processes are stopped and its queues deleted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(asyncio.run(interruptible(parse_args())))
