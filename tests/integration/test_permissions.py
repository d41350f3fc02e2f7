"""Least privilege on the broker: each role's RabbitMQ user may do its work and nothing else.

Every test gets a vhost of its own on a private RabbitMQ node (users are created
with ``rabbitmqctl``, which the shared broker may not let us run), an
administrator declares the topology with ``esb topology declare --users``, and
the definitions it writes are loaded with ``rabbitmqctl import_definitions``,
as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aio_pika
import aiormq.exceptions
import orjson
import pytest
import yaml

from esb.errors import ConfigError
from esb.retry import declare_delay_queues, delay_queue
from esb.routing.loader import load_routes
from esb.routing.services import routing_queues
from esb.settings import BrokerSettings
from esb.slip import HEADER
from esb.topology import QueueNames, QueueSpec, declare_exchange, declare_queue, dlq_name
from tests.support.processes import EsbProcess, read_ids, wait_for, write_orders
from tests.support.rabbit import PrivateRabbit

pytestmark = pytest.mark.private_broker

ROLES = ("source", "router", "transformer", "sink")
NAMES = QueueNames("esb")
EXCHANGE = "esb.events"
ROUTER, MAP, CRM = NAMES.router, NAMES.steps("transformer"), NAMES.sink("crm")
ROUTES = {
    "sources": {"shop": {"adapter": "jsonl", "emits": ["shop.order.created"]}},
    "sinks": {"crm": {"adapter": "jsonl"}},
    "maps": {"to-crm": {"fields": {"order_id": "data.order_id"}}},
    "routes": [
        {"name": "orders-to-crm", "from": "shop.order.*", "steps": [{"map": "to-crm"}], "to": "crm"}
    ],
}
ESB = [sys.executable, "-m", "esb.cli"]


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbit]:
    node = PrivateRabbit(tmp_path_factory.mktemp("rabbit"))
    node.start()
    try:
        yield node
    finally:
        with contextlib.suppress(Exception):
            node.kill()


@dataclass
class Deployment:
    """One vhost with esb's topology and a least-privilege user per role."""

    rabbit: PrivateRabbit
    vhost: str
    passwords: dict[str, str]
    routes: Path
    definitions: Path

    def user(self, role: str) -> str:
        return f"{self.vhost}-{role}"

    def url(self, role: str | None = None) -> str:
        credentials = "guest:guest" if role is None else f"{self.user(role)}:{self.passwords[role]}"
        return f"amqp://{credentials}@127.0.0.1:{self.rabbit.port}/{quote(self.vhost, safe='')}"

    def env(self, role: str | None = None, **extra: str) -> dict[str, str]:
        """Classic queues: permissions do not depend on the queue type, and they declare faster."""
        return {"ESB_BROKER__URL": self.url(role), "ESB_BROKER__QUEUE_TYPE": "classic", **extra}

    async def connect(self, role: str | None = None) -> aio_pika.abc.AbstractConnection:
        return await aio_pika.connect(self.url(role))

    async def depth(self, queue: str) -> int:
        async with await self.connect() as connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)


def esb(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run an ``esb`` command to its end with only ``env``'s esb settings."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("ESB_")}
    return subprocess.run(
        [*ESB, *args],
        env={**inherited, "ESB_SERVICE__HEALTH_PORT": "0", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def deployed(rabbit: PrivateRabbit, tmp_path: Path) -> Iterator[Deployment]:
    """A vhost of its own (a tenant) with esb's topology and its users, deleted after."""
    vhost = f"esbp-{uuid.uuid4().hex[:8]}"
    rabbit.ctl("add_vhost", vhost)
    rabbit.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "flows.yaml").write_text(yaml.safe_dump(ROUTES))
    passwords = {role: secrets.token_urlsafe(16) for role in ROLES}
    users: list[dict[str, object]] = []
    for role in ROLES:
        (tmp_path / f"{role}.password").write_text(passwords[role] + "\n")
        users.append({"name": f"{vhost}-{role}", "role": role, "password_file": f"{role}.password"})
    users[0]["source"] = "shop"
    users[2]["pools"] = ["transformer"]
    users[3]["sink"] = "crm"
    (tmp_path / "users.yaml").write_text(yaml.safe_dump({"users": users}))
    definitions = tmp_path / "definitions.json"
    deployment = Deployment(rabbit, vhost, passwords, routes, definitions)
    declared = esb(
        *("topology", "declare", "--routes", "routes", "--users", "users.yaml"),
        *("--definitions", str(definitions)),
        env=deployment.env(),
        cwd=tmp_path,
    )
    assert declared.returncode == 0, declared.stderr
    rabbit.ctl("import_definitions", str(definitions))
    wait_for(  # the import runs asynchronously
        lambda: all(
            f"{vhost}-{role}\t" in rabbit.ctl("list_permissions", "-p", vhost) for role in ROLES
        ),
        30,
        lambda: f"users not imported: {rabbit.ctl('list_permissions', '-p', vhost)}",
    )
    try:
        yield deployment
    finally:
        for role in ROLES:
            with contextlib.suppress(Exception):
                rabbit.ctl("delete_user", deployment.user(role))
        rabbit.ctl("delete_vhost", vhost)


@pytest.fixture
def deployment(rabbit: PrivateRabbit, tmp_path: Path) -> Iterator[Deployment]:
    with deployed(rabbit, tmp_path) as one:
        yield one


@pytest.fixture
def other_tenant(rabbit: PrivateRabbit, tmp_path: Path) -> Iterator[Deployment]:
    """A second tenant on the same broker: the same routes and queue names in its own vhost."""
    place = tmp_path / "other-tenant"
    place.mkdir()
    with deployed(rabbit, place) as other:
        yield other


def refused(exc: pytest.ExceptionInfo[BaseException], resource: str) -> None:
    """The broker's own refusal (403 ACCESS_REFUSED) of an operation on ``resource``."""
    assert isinstance(exc.value, aiormq.exceptions.ChannelAccessRefused)
    assert "ACCESS_REFUSED" in str(exc.value.args[0])
    assert resource in str(exc.value.args[0])


def one_refusal_line(result: subprocess.CompletedProcess[str]) -> str:
    """esb's report of a refusal: exactly one line, no traceback."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "ACCESS_REFUSED" in line]
    assert len(lines) == 1, output
    return lines[0]


def test_the_definitions_hold_password_hashes_only_readable_by_their_owner(
    deployment: Deployment,
) -> None:
    """What `esb topology declare --users` writes: salted hashes, mode 0600, nothing declarable."""
    text = deployment.definitions.read_text()
    assert deployment.definitions.stat().st_mode & 0o777 == 0o600
    assert not any(password in text for password in deployment.passwords.values())
    document = orjson.loads(text)
    assert {p["configure"] for p in document["permissions"]} == {"^$"}
    assert [t["user"] for t in document["topic_permissions"]] == [deployment.user("source")]


async def test_each_role_checks_its_topology_and_does_its_work_with_declare_false(
    deployment: Deployment,
) -> None:
    """source -> router -> map transformer -> sink, then the sink's retry and parking lot,
    each hop with its own user and no configure permission."""
    settings = BrokerSettings(declare=False, queue_type="classic")
    table = load_routes(deployment.routes)
    own = {
        "source": [],
        "router": routing_queues(table, NAMES),
        "transformer": [QueueSpec(MAP, [])],
        "sink": [QueueSpec(CRM, [])],
    }
    connections = {role: await deployment.connect(role) for role in ROLES}
    try:
        channels = {role: await connections[role].channel() for role in ROLES}
        for role in ROLES:
            await declare_exchange(channels[role], EXCHANGE, declare=False)
            for spec in own[role]:
                await declare_queue(channels[role], spec, settings)
                if spec.name != NAMES.unrouted:
                    await declare_delay_queues(channels[role], spec.name, 5, settings)

        source = await connections["source"].channel(publisher_confirms=True)
        events = await source.get_exchange(EXCHANGE, ensure=False)
        await events.publish(aio_pika.Message(b"{}", message_id="e-1"), "shop.order.created")

        hops = [("router", ROUTER, MAP), ("transformer", MAP, CRM), ("sink", CRM, None)]
        for role, take, give in hops:
            channel = await connections[role].channel(publisher_confirms=True)
            queue = await channel.declare_queue(take, passive=True)
            message = await queue.get(timeout=5)
            assert message.message_id == "e-1"
            await message.ack()
            if give is not None:
                copy = aio_pika.Message(b"{}", message_id="e-1", headers={HEADER: "{}"})
                await channel.default_exchange.publish(copy, give)

        sink = await connections["sink"].channel(publisher_confirms=True)
        await sink.default_exchange.publish(
            aio_pika.Message(b"{}", message_id="e-1", expiration=0.1), delay_queue(CRM, 1)
        )
        await sink.default_exchange.publish(
            aio_pika.Message(b"{}", message_id="e-1"), dlq_name(CRM)
        )
        crm = await sink.declare_queue(CRM, passive=True)
        back = None
        deadline = time.monotonic() + 10
        while back is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            back = await crm.get(fail=False)
        assert back is not None, "the delay queue did not return it"
        assert back.message_id == "e-1"
        await back.ack()
    finally:
        for connection in connections.values():
            await connection.close()
    assert await deployment.depth(dlq_name(CRM)) == 1


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer callback for a consume the broker refuses before any delivery."""


async def test_a_source_cannot_read_a_sink_or_router_queue(deployment: Deployment) -> None:
    async with await deployment.connect("source") as connection:
        for queue in (CRM, ROUTER, MAP):
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as get:
                await declared.get(fail=False)
            refused(get, f"queue '{queue}'")
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as consume:
                await declared.consume(ignore)
            refused(consume, f"queue '{queue}'")


async def test_a_source_cannot_put_a_forged_slip_on_a_transformer_or_sink_queue(
    deployment: Deployment,
) -> None:
    """The default exchange (``amq.default``) and the built-in exchanges are closed to it,
    and the events exchange routes nothing to a hop queue."""
    slip = orjson.dumps({"route": "orders-to-crm", "steps": [], "to": ["crm"], "position": 2})
    forged: dict[str, aio_pika.abc.FieldValue] = {HEADER: slip.decode()}
    async with await deployment.connect("source") as connection:
        for queue in (MAP, CRM):
            channel = await connection.channel(publisher_confirms=True)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as default:
                await channel.default_exchange.publish(
                    aio_pika.Message(b"{}", headers=forged), queue
                )
            refused(default, "exchange 'amq.default'")
        for exchange in ("amq.direct", "amq.topic", "amq.fanout", "amq.headers"):
            channel = await connection.channel(publisher_confirms=True)
            other = await channel.get_exchange(exchange, ensure=False)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as built_in:
                await other.publish(aio_pika.Message(b"{}", headers=forged), MAP)
            refused(built_in, f"exchange '{exchange}'")
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        events = await channel.get_exchange(EXCHANGE, ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as keyed:
            await events.publish(aio_pika.Message(b"{}", headers=forged), MAP, mandatory=True)
        refused(keyed, f"topic '{MAP}'")
    assert await deployment.depth(MAP) == 0
    assert await deployment.depth(CRM) == 0


async def test_a_source_may_publish_only_the_types_its_routes_declare_it_emits(
    deployment: Deployment,
) -> None:
    async with await deployment.connect("source") as connection:
        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange(EXCHANGE, ensure=False)
        await events.publish(aio_pika.Message(b"{}"), "shop.order.created")
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as other_type:
            await events.publish(aio_pika.Message(b"{}"), "crm.customer.created")
        refused(other_type, "topic 'crm.customer.created'")
    assert await deployment.depth(ROUTER) == 1


async def test_consumers_cannot_publish_events_nor_read_other_queues(
    deployment: Deployment,
) -> None:
    """A router, transformer or sink user cannot publish on the events exchange (forging an
    event) nor read a queue that is not its own."""
    not_theirs = {"router": CRM, "transformer": ROUTER, "sink": MAP}
    for role, queue in not_theirs.items():
        async with await deployment.connect(role) as connection:
            channel = await connection.channel(publisher_confirms=True)
            events = await channel.get_exchange(EXCHANGE, ensure=False)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as publish:
                await events.publish(aio_pika.Message(b"{}"), "shop.order.created")
            refused(publish, f"exchange '{EXCHANGE}'")
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as read:
                await declared.get(fail=False)
            refused(read, f"queue '{queue}'")
    assert await deployment.depth(ROUTER) == 0


async def test_no_role_may_declare_and_esb_says_which_permission_in_one_line(
    deployment: Deployment,
) -> None:
    for role in ROLES:
        async with await deployment.connect(role) as connection:
            channel = await connection.channel()
            with pytest.raises(ConfigError) as declaring:
                await declare_queue(channel, QueueSpec(MAP, []), BrokerSettings())
            message = str(declaring.value)
            assert "\n" not in message
            assert f"declaring exchange '{EXCHANGE}'" in message
            assert "lacks configure permission" in message
            assert "ACCESS_REFUSED" in message
            assert "broker.declare false" in message
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as deleting:
                await channel.queue_delete(CRM)
            refused(deleting, f"queue '{CRM}'")
    assert await deployment.depth(CRM) == 0  # still there


async def test_declare_false_names_the_missing_queue_and_the_command_that_declares_it(
    deployment: Deployment,
) -> None:
    async with await deployment.connect("sink") as connection:
        channel = await connection.channel()
        with pytest.raises(ConfigError) as missing:
            await declare_queue(
                channel, QueueSpec("esb.sink.ledger", []), BrokerSettings(declare=False)
            )
    assert str(missing.value) == (
        "queue 'esb.sink.ledger.dlq' does not exist and broker.declare is false: declare it "
        "first, as an administrator: esb topology declare --queue esb.sink.ledger "
        "(or --routes DIR), with this process's settings"
    )


def test_a_transformer_process_that_may_not_declare_is_refused_in_one_line(
    deployment: Deployment,
) -> None:
    """`esb run transformer` with its least-privilege user but broker.declare left true."""
    routes = str(deployment.routes)
    result = esb("run", "transformer", "--routes", routes, env=deployment.env("transformer"))
    assert result.returncode == 1
    line = one_refusal_line(result)
    assert line.startswith("Error: declaring exchange 'esb.events': refused by the broker")
    assert "lacks configure permission" in line


def test_a_sink_user_publishing_events_is_refused_in_one_line(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A source process run with a sink's credentials cannot publish on the events exchange."""
    write_orders(tmp_path / "orders.jsonl", 1)
    env = deployment.env(
        "sink",
        ESB_BROKER__DECLARE="false",
        ESB_ADAPTER__PATH=str(tmp_path / "orders.jsonl"),
        ESB_ADAPTER__EVENT_TYPE="shop.order.created",
    )
    result = esb("run", "source", "jsonl", env=env, timeout=30)
    assert result.returncode == 1
    line = one_refusal_line(result)
    assert "lacks write permission" in line
    assert "exchange 'esb.events'" in line


def test_a_source_user_reading_a_sink_queue_is_refused_in_one_line(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A sink process run with a source's credentials cannot consume the sink's queue."""
    env = deployment.env(
        "source",
        ESB_BROKER__DECLARE="false",
        ESB_SERVICE__NAME="crm",
        ESB_ADAPTER__PATH=str(tmp_path / "out.jsonl"),
    )
    result = esb("run", "sink", "jsonl", env=env, timeout=30)
    assert result.returncode == 1
    line = one_refusal_line(result)
    assert "lacks read permission" in line
    assert f"queue '{CRM}'" in line


def started(process: EsbProcess) -> None:
    """Ready, or fail at once with its log when it exited (a refused start ends the process)."""
    wait_for(lambda: process.ready() or process.popen.poll() is not None, 30, process.tail)
    assert process.popen.poll() is None, process.tail()


def test_every_process_runs_with_its_own_least_privilege_user(
    deployment: Deployment, tmp_path: Path
) -> None:
    """source, router, transformer and sink processes, each as its own user: events flow."""
    expected = write_orders(tmp_path / "orders.jsonl", 5)
    out = tmp_path / "out.jsonl"
    common = {"ESB_BROKER__DECLARE": "false"}
    running = [
        EsbProcess(
            ["run", "router", "--routes", str(deployment.routes)],
            {**deployment.env("router"), **common},
            tmp_path / "router.log",
        ),
        EsbProcess(
            ["run", "transformer", "--routes", str(deployment.routes)],
            {**deployment.env("transformer"), **common},
            tmp_path / "transformer.log",
        ),
        EsbProcess(
            ["run", "sink", "jsonl"],
            {
                **deployment.env("sink"),
                **common,
                "ESB_SERVICE__NAME": "crm",
                "ESB_ADAPTER__PATH": str(out),
            },
            tmp_path / "sink.log",
        ),
    ]
    try:
        for process in running:
            started(process)
        source = EsbProcess(
            ["run", "source", "jsonl"],
            {
                **deployment.env("source"),
                **common,
                "ESB_ADAPTER__PATH": str(tmp_path / "orders.jsonl"),
                "ESB_ADAPTER__EVENT_TYPE": "shop.order.created",
                "ESB_ADAPTER__ID_FIELD": "order_id",
            },
            tmp_path / "source.log",
        )
        assert source.wait(timeout=60) == 0, source.tail()
        wait_for(
            lambda: len(read_ids(out)) >= len(expected),
            60,
            lambda: f"{read_ids(out)}; sink log:\n{running[2].tail()}",
        )
    finally:
        for process in running:
            process.stop()


def test_a_tenants_users_cannot_open_another_tenants_vhost_and_esb_says_so_in_one_line(
    deployment: Deployment, other_tenant: Deployment, tmp_path: Path
) -> None:
    """Tenant A's sink and source users pointed at tenant B's vhost: the broker refuses the
    connection itself, before any queue or exchange is named."""
    write_orders(tmp_path / "orders.jsonl", 1)
    trespass = deployment.url("sink").rsplit("/", 1)[0] + f"/{other_tenant.vhost}"
    sink = esb(
        "run",
        "sink",
        "jsonl",
        env={
            **deployment.env("sink", ESB_BROKER__DECLARE="false", ESB_SERVICE__NAME="crm"),
            "ESB_BROKER__URL": trespass,
            "ESB_ADAPTER__PATH": str(tmp_path / "out.jsonl"),
        },
        timeout=30,
    )
    source_url = deployment.url("source").rsplit("/", 1)[0] + f"/{other_tenant.vhost}"
    source = esb(
        "publish",
        "--type",
        "shop.order.created",
        env={**deployment.env("source"), "ESB_BROKER__URL": source_url},
        timeout=30,
    )
    for result in (sink, source):
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "Traceback" not in output, output
        [line] = [line for line in output.splitlines() if "virtual host" in line]
        assert f"refused to open virtual host '{other_tenant.vhost}'" in line
        assert deployment.passwords["sink"] not in output
        assert deployment.passwords["source"] not in output
    assert read_ids(tmp_path / "out.jsonl") == []  # nothing of B's reached A's sink


async def test_tenants_share_queue_names_but_never_each_others_events(
    deployment: Deployment, other_tenant: Deployment, tmp_path: Path
) -> None:
    """The same routes in two vhosts: tenant A's event reaches A's router queue only."""
    write_orders(tmp_path / "orders.jsonl", 3)
    published = esb(
        "run",
        "source",
        "jsonl",
        env=deployment.env(
            "source",
            ESB_BROKER__DECLARE="false",
            ESB_ADAPTER__PATH=str(tmp_path / "orders.jsonl"),
            ESB_ADAPTER__EVENT_TYPE="shop.order.created",
        ),
    )
    assert published.returncode == 0, published.stderr
    assert await deployment.depth(ROUTER) == 3
    assert await other_tenant.depth(ROUTER) == 0
