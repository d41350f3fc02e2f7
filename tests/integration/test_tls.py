"""AMQPS with peer verification, against a private RabbitMQ node with a TLS listener."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from esb import Broker, BrokerSettings, CloudEvent, ConfigError, Metrics
from esb.testing import free_port
from esb.topology import QueueSpec, declare_queue
from tests.support.pki import authority, signed
from tests.support.rabbit import PrivateRabbit


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for DNS:localhost only."""
    d = tmp_path_factory.mktemp("pki")
    authority(d)
    signed("server", "/CN=localhost", d, "subjectAltName=DNS:localhost\n")
    for name in ("server.key", "server.pem", "ca.pem"):
        (d / name).chmod(0o644)
    return d


@pytest.fixture(scope="module")
def tls_rabbit(
    tmp_path_factory: pytest.TempPathFactory, certificates: Path
) -> Iterator[tuple[PrivateRabbit, int]]:
    """One private node with a TLS listener, shared by this module's tests."""
    port = free_port()
    config = (
        f"listeners.ssl.1 = 127.0.0.1:{port}\n"
        f"ssl_options.cacertfile = {certificates / 'ca.pem'}\n"
        f"ssl_options.certfile = {certificates / 'server.pem'}\n"
        f"ssl_options.keyfile = {certificates / 'server.key'}\n"
        "ssl_options.verify = verify_none\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
    )
    node = PrivateRabbit(tmp_path_factory.mktemp("rabbit"), extra_config=config)
    node.start()
    try:
        yield node, port
    finally:
        node.kill()


async def test_amqps_with_the_right_ca_connects_and_publishes(
    tls_rabbit: tuple[PrivateRabbit, int], certificates: Path
) -> None:
    _, port = tls_rabbit
    settings = BrokerSettings.model_validate(
        {"url": f"amqps://guest:guest@localhost:{port}/", "tls_ca_file": certificates / "ca.pem"}
    )
    broker = Broker(settings, "tls", Metrics())
    await broker.connect()
    try:
        await declare_queue(broker.channel, QueueSpec("tls.q", ["#"]), settings)
        await broker.publish(CloudEvent.new("t.x", "urn:t", {"over": "tls"}))
    finally:
        await broker.close()


@pytest.mark.parametrize(
    ("host", "with_ca", "reason"),
    [
        ("localhost", False, "CERTIFICATE_VERIFY_FAILED"),
        ("127.0.0.1", True, "CERTIFICATE_VERIFY_FAILED"),
    ],
)
async def test_an_unverifiable_broker_is_refused(
    tls_rabbit: tuple[PrivateRabbit, int], certificates: Path, host: str, with_ca: bool, reason: str
) -> None:
    _, port = tls_rabbit
    doc: dict[str, object] = {
        "url": f"amqps://guest:Canary-Pw@{host}:{port}/",
        "connect_timeout": 5,
    }
    if with_ca:
        doc["tls_ca_file"] = certificates / "ca.pem"
    broker = Broker(BrokerSettings.model_validate(doc), "tls", Metrics())
    with pytest.raises(ConfigError) as caught:
        await broker.connect()
    assert reason in str(caught.value)
    assert "Canary-Pw" not in str(caught.value)
