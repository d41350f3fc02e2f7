"""Watch esb processes from outside: /healthz latency every 50 ms and peak resident memory.

Runs as its own process (``python -m tests.support.hostile_watch OUT NAME=PORT:PID ...``)
so the test's own work cannot delay a probe and be blamed on the process probed. On
SIGTERM it writes, per process, the worst probe latency, how many probes took over
100 ms or failed, and the peak resident set (``VmHWM``), as JSON to ``OUT``.

A probe's latency counts only the time the process could have answered: the time its
event loop's thread (and the probing thread) spent runnable but waiting for a core, read
from the kernel's ``/proc/<pid>/task/<tid>/schedstat``, is taken off. On a loaded 2-core
machine a busy process can wait 100 ms and more for a core; that is the machine's, while
a loop blocked by a message is on a core the whole time and is counted in full. The raw
worst is kept beside it (``worst_raw_ms``).

It also probes a ``control``: an idle asyncio HTTP server in a process of its own,
probed the same way, to show what the machine costs a process that does nothing.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from esb.testing import free_port

PERIOD = 0.05
SLOW_MS = 100.0
PROBE_TIMEOUT = 5.0


@dataclass
class Watched:
    """What one process showed: probe latencies and memory."""

    port: int
    pid: int
    probes: int = 0
    slow: int = 0
    failed: int = 0
    worst_ms: float = 0.0
    worst_raw_ms: float = 0.0
    peak_rss_mb: float = 0.0
    errors: list[str] = field(default_factory=list)


def peak_rss_mb(pid: int) -> float | None:
    """The process's high-water resident set, in MiB; None once it has ended (a zombie too)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def waited_ms(pid: int, tid: int) -> float:
    """How long the thread has been runnable without a core, in all: schedstat's second
    field (0 once the thread has ended, which a probe then counts as failed)."""
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
    except OSError:
        return 0.0
    return int(fields[1]) / 1e6


def probe(watched: Watched) -> None:
    me = threading.get_native_id()
    waits = waited_ms(watched.pid, watched.pid) + waited_ms(os.getpid(), me)
    started = time.perf_counter()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", watched.port, timeout=PROBE_TIMEOUT)
        connection.request("GET", "/healthz")
        status = connection.getresponse().status
        connection.close()
        if status != 200:
            raise OSError(f"status {status}")
    except ConnectionRefusedError:
        # Not listening yet, or no more: starting, or stopping after its input ended. How a
        # process ends is judged by its exit (tests/support/hostile.py, stop_process).
        return
    except OSError as exc:
        watched.failed += 1
        if len(watched.errors) < 5:
            watched.errors.append(f"{type(exc).__name__}: {exc}")
    raw = (time.perf_counter() - started) * 1000
    waited = waited_ms(watched.pid, watched.pid) + waited_ms(os.getpid(), me) - waits
    elapsed = max(0.0, raw - waited)
    watched.probes += 1
    watched.worst_ms = max(watched.worst_ms, elapsed)
    watched.worst_raw_ms = max(watched.worst_raw_ms, raw)
    if elapsed > SLOW_MS:
        watched.slow += 1


def watch(watched: Watched, stop: threading.Event) -> None:
    """Probe until told to stop, or until the process has ended (whether it may is the
    test's to judge)."""
    while not stop.is_set():
        rss = peak_rss_mb(watched.pid)
        if rss is None:
            return
        watched.peak_rss_mb = max(watched.peak_rss_mb, rss)
        probe(watched)
        stop.wait(PERIOD)


CONTROL = """
import sys
from aiohttp import web

async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")

app = web.Application()
app.router.add_get("/healthz", healthz)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def start_control() -> tuple[subprocess.Popen[bytes], Watched]:
    port = free_port()
    control = subprocess.Popen([sys.executable, "-c", CONTROL, str(port)])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return control, Watched(port, control.pid)


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    targets: dict[str, Watched] = {}
    for spec in argv[1:]:
        name, _, where = spec.partition("=")
        port, _, pid = where.partition(":")
        targets[name] = Watched(int(port), int(pid))
    control, targets["control"] = start_control()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [threading.Thread(target=watch, args=(w, stop)) for w in targets.values()]
    for thread in threads:
        thread.start()
    out.with_suffix(".started").touch()
    for thread in threads:
        thread.join()
    control.terminate()
    control.wait(timeout=10)
    out.write_bytes(orjson.dumps({name: asdict(w) for name, w in targets.items()}))


if __name__ == "__main__":
    main(sys.argv[1:])
