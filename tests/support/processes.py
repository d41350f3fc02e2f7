"""Run ``esb`` as real processes, as an operator would, and watch their output files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson

from esb import Broker, BrokerSettings, Metrics
from esb.testing import free_port

ESB = [sys.executable, "-m", "esb.cli"]


def esb_cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """One ``esb`` command, as an operator runs it, with ``env`` over this environment."""
    return subprocess.run(
        [*ESB, *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class EsbProcess:
    """One ``esb run ...`` subprocess with its own health port and log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.health_port = free_port()
        self.log = log
        full_env = {**os.environ, **env, "ESB_SERVICE__HEALTH_PORT": str(self.health_port)}
        self._log_file = log.open("ab")
        self.popen = subprocess.Popen(
            [*ESB, *args], env=full_env, stdout=self._log_file, stderr=self._log_file
        )

    def ready(self) -> bool:
        return is_ready(f"127.0.0.1:{self.health_port}")

    def metrics(self) -> str:
        return scrape(f"127.0.0.1:{self.health_port}")

    def health(self, path: str = "/readyz") -> tuple[int, str]:
        """Status and body of a health endpoint, a 503 included."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}{path}", timeout=2
            ) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(self.ready, timeout, lambda: f"esb process not ready; log:\n{self.tail()}")

    def signal(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout=timeout)
        self._log_file.close()
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to finish, ack or close anything."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)
        self._log_file.close()

    stop = kill

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def start_unported(
    args: list[str], env: dict[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """An ``esb`` process with no health port set, as an operator starts one by hand: it picks
    a free port and advertises it."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*ESB, *args], env={**os.environ, **env}, cwd=cwd, stdout=out, stderr=out
        )


def is_ready(target: str) -> bool:
    """Whether the process serving health at ``HOST:PORT`` says it is ready."""
    try:
        with urllib.request.urlopen(f"http://{target}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def scrape(target: str) -> str:
    """The metrics of the process serving them at ``HOST:PORT``."""
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=2) as response:
        return str(response.read().decode())


def wait_for(condition: Callable[[], bool], timeout: float, message: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(message())


def read_ids(path: Path) -> list[str]:
    """Ids in a JSON-lines sink file, in file order (duplicates kept, to be asserted on)."""
    if not path.exists():
        return []
    ids = []
    for line in path.read_bytes().splitlines():
        if line:
            ids.append(str(orjson.loads(line)["id"]))
    return ids


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def write_orders(path: Path, count: int) -> list[str]:
    """A JSON-lines input of ``count`` orders; their ids are the order numbers."""
    with path.open("wb") as out:
        for number in range(count):
            out.write(orjson.dumps({"order_id": f"o-{number}", "total": number * 1.25}) + b"\n")
    return [f"o-{number}" for number in range(count)]


async def connected_broker(env: dict[str, str], service: str = "test") -> Broker:
    """A broker connection on the exchange of the processes started with ``env``."""
    settings = BrokerSettings.model_validate(
        {"url": env["ESB_BROKER__URL"], "exchange": env["ESB_BROKER__EXCHANGE"]}
    )
    broker = Broker(settings, service, Metrics())
    await broker.connect()
    return broker


#: One route through a transformer hop to the sink ``ledger``, for ledger tests: every event
#: carries its sequence number, and the sink's file must hold each exactly once.
LEDGER_ROUTES = """\
sinks: {ledger: {}}
routes:
  - name: ledger
    from: ledger.#
    steps: [{map: {fields: {seq: data.seq, kind: {const: entry}}}}]
    to: ledger
"""


def ledger(out: Path) -> Counter[int]:
    """How many times each sequence number is in a ledger sink's file."""
    return Counter(orjson.loads(line)["data"]["seq"] for line in out.read_bytes().splitlines())


def routes_dir(tmp_path: Path, text: str) -> Path:
    """A routes directory under ``tmp_path`` holding one route file of ``text``."""
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "r.yaml").write_text(text)
    return routes
