"""Find a real RabbitMQ, or start a private node that tests may stop and kill."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import aio_pika

from esb.testing import free_port

LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/"
HOW_TO_START = (
    "no RabbitMQ found: set AMQP_URL, or run `make broker` to start one on 127.0.0.1:5672, "
    "or start a Docker engine for testcontainers"
)


async def queue_depth(url: str, queue: str) -> int:
    """Messages ready in ``queue``: once its consumers are gone, what the broker would
    deliver again."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        assert count is not None
        return count


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def rabbit_bin(name: str) -> str:
    """Debian's /usr/sbin wrappers switch to the rabbitmq user; the real scripts do not."""
    direct = Path("/usr/lib/rabbitmq/bin") / name
    if direct.exists():
        return str(direct)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install rabbitmq-server (make broker does)")
    return found


class PrivateRabbit:
    """A RabbitMQ node of our own: own name, ports and data dir; never the shared one.

    Nodes that are to form a cluster share ``home``, where the Erlang cookie lives: the
    nodes and the CLI tools that drive them authenticate to each other with it.
    """

    def __init__(self, base: Path, extra_config: str = "", *, home: Path | None = None) -> None:
        self.base = base
        self.home = base if home is None else home
        self.node = f"esbtest{os.getpid()}x{free_port()}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.process: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text("loopback_users = none\n" + extra_config)
        (base / "rabbitmq-env.conf").write_text("")
        (base / "enabled_plugins").write_text("[].\n")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=str(self.home),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.base / "pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def ctl(self, *args: str, timeout: float = 60, tool: str = "rabbitmqctl") -> str:
        """Run a RabbitMQ CLI ``tool`` (rabbitmqctl, rabbitmq-queues, rabbitmq-upgrade, ...)
        against this node and return its output."""
        result = subprocess.run(
            [rabbit_bin(tool), "-n", self.node, *args],
            env=self._env(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: {result.stderr.decode()[-2000:]}")
        return result.stdout.decode()

    def start(self, timeout: float = 60) -> None:
        with (self.base / "server.out").open("ab") as log:
            self.process = subprocess.Popen(
                [rabbit_bin("rabbitmq-server")],
                env=self._env(),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.base / "server.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"private RabbitMQ {self.node} exited at start:\n{tail}")
            if port_open("127.0.0.1", self.port):
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"private RabbitMQ {self.node} did not open port {self.port} in {timeout}s"
        )

    def vm_pid(self) -> int:
        """The OS process id of the node's Erlang VM, which the node writes to its pid file."""
        return int((self.base / "pid").read_text().strip())

    def stop(self) -> None:
        """A clean stop of the whole node."""
        if self.process is None:
            return
        self.ctl("stop")
        self.process.wait(timeout=60)
        self.process = None

    def kill(self) -> None:
        """SIGKILL the node's VM: no goodbye to clients."""
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None
