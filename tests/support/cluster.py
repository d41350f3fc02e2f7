"""A RabbitMQ cluster of three private nodes on this machine, for tests that lose nodes.

Each node is a :class:`~tests.support.rabbit.PrivateRabbit` (own name, ports and data
directory); they share one Erlang cookie and join the first node's cluster, as
``scripts/cluster.sh`` does for people trying esb on a cluster, with the same
``scripts/cluster.conf`` (partition handling).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from tests.support.rabbit import PrivateRabbit

#: How long a node may take to start, join or stop on a loaded machine.
NODE_TIMEOUT = 180.0
#: The nodes' rabbitmq.conf, shared with scripts/cluster.sh.
CONFIG = Path(__file__).parents[2] / "scripts" / "cluster.conf"


class RabbitCluster:
    """Three private nodes joined into one cluster; quorum queues get a member on each."""

    def __init__(self, base: Path, size: int = 3) -> None:
        base.mkdir(parents=True, exist_ok=True)
        cookie = base / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        config = CONFIG.read_text()
        self.nodes = [
            PrivateRabbit(base / f"node{n}", config, home=base) for n in range(1, size + 1)
        ]

    def start(self) -> None:
        """Start every node at once, then join the others to the first."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.start(NODE_TIMEOUT), self.nodes))
        first, *others = self.nodes
        for node in others:
            node.ctl("stop_app", timeout=NODE_TIMEOUT)
            node.ctl("join_cluster", first.node, timeout=NODE_TIMEOUT)
            node.ctl("start_app", timeout=NODE_TIMEOUT)
        self.await_all_running()

    def await_all_running(self) -> None:
        """Return once every node runs and sees the others."""
        for node in self.nodes:
            node.ctl("await_online_nodes", str(len(self.nodes)), timeout=NODE_TIMEOUT)

    def urls(self, first: int = 0) -> list[str]:
        """Every node's AMQP URL, starting at node ``first`` (to spread clients over nodes)."""
        urls = [node.url for node in self.nodes]
        return urls[first:] + urls[:first]

    def broker_env(self, first: int = 0) -> dict[str, str]:
        """``ESB_BROKER__URL`` and ``ESB_BROKER__FAILOVER_URLS`` naming all the nodes."""
        url, *failover = self.urls(first)
        return {
            "ESB_BROKER__URL": url,
            "ESB_BROKER__FAILOVER_URLS": orjson.dumps(failover).decode(),
        }

    def running(self) -> PrivateRabbit:
        """A node that is up, to ask the cluster about itself."""
        return next(node for node in self.nodes if node.process is not None)

    def queues(self) -> list[dict[str, object]]:
        """Every queue with its type, leader and members, as ``rabbitmqctl`` reports them."""
        out = self.running().ctl(
            "list_queues",
            "name",
            "type",
            "leader",
            "members",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            "--formatter",
            "json",
        )
        rows: list[dict[str, object]] = orjson.loads(out)
        return rows

    def leader_of(self, queue: str) -> PrivateRabbit:
        """The node that leads quorum queue ``queue``."""
        leader = next(row["leader"] for row in self.queues() if row["name"] == queue)
        return next(node for node in self.nodes if node.node == leader)

    def restart(self, node: PrivateRabbit) -> None:
        """Stop ``node`` cleanly and start it again, once its quorum queues can spare it (as
        an upgrade does, one node at a time)."""
        node.ctl("await_online_quorum_plus_one", tool="rabbitmq-upgrade", timeout=NODE_TIMEOUT)
        node.stop()
        node.start(NODE_TIMEOUT)
        self.await_all_running()

    def pause(self, node: PrivateRabbit) -> None:
        """SIGSTOP ``node``'s Erlang VM: it answers nobody, neither the other nodes nor its
        clients, while its sockets stay open, as behind a cut network link."""
        os.kill(node.vm_pid(), signal.SIGSTOP)

    def resume(self, node: PrivateRabbit) -> None:
        """SIGCONT a paused node: the link is back and the partition heals."""
        os.kill(node.vm_pid(), signal.SIGCONT)

    def partitions(self) -> list[str]:
        """The partitions the nodes report, as ``rabbitmqctl cluster_status`` does: none when
        every node sees the others."""
        found: list[str] = []
        for node in self.nodes:
            status = orjson.loads(node.ctl("cluster_status", "--formatter", "json"))
            found += [f"{node.node}: {p}" for p in status.get("partitions", {}).items()]
        return found

    def kill(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()
