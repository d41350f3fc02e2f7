"""Fixtures: a real RabbitMQ (AMQP_URL, then 127.0.0.1:5672, then testcontainers), unique names."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest

from bench.cleanup import leftovers
from esb.retry import delay_queue
from esb.teardown import MAX_RETRY_QUEUES, delete_deployment
from tests.support.cluster import RabbitCluster
from tests.support.rabbit import HOW_TO_START, LOCAL_URL, PrivateRabbit, port_open, rabbit_bin

#: The prefix of every name a test declares on the shared broker (the bench checks its own).
TEST_PREFIX = "esbt-"
_BEFORE = pytest.StashKey[set[str] | None]()


def pytest_sessionstart(session: pytest.Session) -> None:
    found = leftovers(TEST_PREFIX)
    session.stash[_BEFORE] = None if found is None else set(found)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when it left queues or exchanges on the broker: a developer's broker
    would fill with dead queues run after run."""
    before, after = session.stash.get(_BEFORE, None), leftovers(TEST_PREFIX)
    if before is None or after is None:
        return  # no rabbitmqctl, or no broker: the tests that needed one have said so
    left = sorted(set(after) - before)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"the run left {len(left)} queues and exchanges under {TEST_PREFIX!r} on the "
                f"broker (each test must delete what it declares): {', '.join(left[:20])}",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _container_url() -> Iterator[str] | None:
    try:
        import docker  # type: ignore[import-untyped]
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        docker.from_env().ping()
    except Exception:
        return None

    def run() -> Iterator[str]:
        with DockerContainer("rabbitmq:3.13").with_exposed_ports(5672) as container:
            wait_for_logs(container, "Server startup complete", timeout=120)
            host = container.get_container_host_ip()
            yield f"amqp://guest:guest@{host}:{container.get_exposed_port(5672)}/"

    return run()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """The shared broker every integration test uses; fails (never skips) when none is found."""
    if url := os.environ.get("AMQP_URL"):
        yield url
        return
    if port_open("127.0.0.1", 5672):
        yield LOCAL_URL
        return
    container = _container_url()
    if container is None:
        pytest.fail(HOW_TO_START)
    yield from container


@dataclass
class Names:
    """Exchange and queue names unique to one test, so parallel runs never collide."""

    prefix: str

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.events"

    @property
    def queue(self) -> str:
        return f"{self.prefix}.sink"


@pytest.fixture
async def names(amqp_url: str) -> AsyncIterator[Names]:
    """Unique names, with the exchange and queues deleted after the test."""
    names = Names(f"esbt-{uuid.uuid4().hex[:10]}")
    yield names
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        delay_queues = (delay_queue(names.queue, n) for n in range(1, MAX_RETRY_QUEUES + 1))
        for queue in (names.queue, names.queue + ".dlq", *delay_queues):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
        channel = await connection.channel()
        with contextlib.suppress(Exception):
            await channel.exchange_delete(names.exchange)


@pytest.fixture
def esb_env(amqp_url: str, names: Names) -> dict[str, str]:
    """Environment for an ``esb`` process on the shared broker under this test's names."""
    return {
        "ESB_BROKER__URL": amqp_url,
        "ESB_BROKER__EXCHANGE": names.exchange,
        "ESB_CONSUME__QUEUE": names.queue,
        "ESB_CONSUME__BINDINGS": '["#"]',
    }


@pytest.fixture
def private_rabbit(tmp_path: Path) -> Iterator[PrivateRabbit]:
    """A RabbitMQ node of this test's own, free to be stopped or killed."""
    node = PrivateRabbit(tmp_path / "rabbit")
    node.start()
    try:
        yield node
    finally:
        with contextlib.suppress(Exception):
            node.kill()


@pytest.fixture
def rabbit_cluster(tmp_path: Path) -> Iterator[RabbitCluster]:
    """A three-node RabbitMQ cluster of this test's own; fails (never skips) when
    rabbitmq-server is not installed."""
    try:
        rabbit_bin("rabbitmq-server")
    except RuntimeError as missing:
        pytest.fail(f"{missing}: the cluster tests start three private nodes with it")
    cluster = RabbitCluster(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill()


#: Sinks the routed tests declare; their queues are deleted after each test.
ROUTED_TEST_SINKS = ("crm", "ledger", "carrier", "orders-db")


@pytest.fixture
async def routed_env(amqp_url: str) -> AsyncIterator[dict[str, str]]:
    """Environment for router, transformer and sink processes under a prefix of this test."""
    prefix = f"esbt-{uuid.uuid4().hex[:10]}"
    exchange = f"{prefix}.events"
    yield {
        "ESB_BROKER__URL": amqp_url,
        "ESB_BROKER__EXCHANGE": exchange,
        "ESB_BROKER__PREFIX": prefix,
    }
    await delete_deployment(amqp_url, prefix, exchange, ROUTED_TEST_SINKS)
